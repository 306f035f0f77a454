//! fsync off while packages install, as mkosi and mmdebstrap's eatmydata
//! hook do: `force-unsafe-io` stops dpkg syncing the files it unpacks, but
//! not its database (a status journal entry, fsynced, per package state
//! change): ~3,800 fsync calls and ~4 s of waiting in the base alone here.
//! An image is written once and synced when sealed (blobs are fsynced), so
//! nothing is lost. libeatmydata comes from the image's own suite (so it
//! matches the root's C library), through the package cache, and is never
//! part of a layer: it is bind-mounted in (layers) or put in and removed
//! again by the bootstrap's hooks (base).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cache::Cache;
use crate::index::{Package, PackageIndex};
use nib_host::Cmd;

/// The package holding the library.
pub const PACKAGE: &str = "libeatmydata1";

/// Where the library is seen inside a root while packages install.
pub const IN_ROOT: &str = "/usr/lib/nib-nosync.so";

/// The package, when the image's archive has it (else nib goes without).
pub fn package(idx: &PackageIndex) -> Option<&Package> {
    idx.get(PACKAGE)
}

/// The library, unpacked once from the (verified, cached) .deb into
/// `<cache>/nosync/<sha256>/`. None when the package has no such file.
pub fn library(cache: &Cache, pkg: &Package) -> Result<Option<PathBuf>> {
    let dir = cache.root.join("nosync").join(&pkg.sha256);
    let done = dir.join("libeatmydata.so");
    if done.is_file() {
        return Ok(Some(done));
    }
    let tmp = cache.work_dir(&format!("nosync-{}", pkg.sha256))?;
    Cmd::new("dpkg-deb")
        .arg("-x")
        .arg(cache.deb_blobs().join(&pkg.sha256))
        .arg(&tmp)
        .run()
        .with_context(|| format!("unpacking {PACKAGE}"))?;
    let Some(lib) = find_lib(&tmp)? else {
        return Ok(None);
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let part = dir.join(".libeatmydata.so.tmp");
    fs::copy(&lib, &part).with_context(|| format!("copying {}", lib.display()))?;
    fs::rename(&part, &done).with_context(|| format!("renaming into {}", done.display()))?;
    crate::fsutil::remove_any(&tmp)?;
    Ok(Some(done))
}

/// The real file (not a symlink) named libeatmydata.so* under `dir`.
fn find_lib(dir: &Path) -> Result<Option<PathBuf>> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            if let Some(p) = find_lib(&e.path())? {
                return Ok(Some(p));
            }
        } else if ft.is_file()
            && e.file_name()
                .to_string_lossy()
                .starts_with("libeatmydata.so")
        {
            return Ok(Some(e.path()));
        }
    }
    Ok(None)
}

/// What /usr/bin/dpkg is while the base bootstraps: the real one (diverted
/// to dpkg.nib-build) with the library preloaded.
pub fn dpkg_wrapper() -> String {
    format!("#!/bin/sh\nLD_PRELOAD={IN_ROOT} exec /usr/bin/dpkg.nib-build \"$@\"\n")
}
