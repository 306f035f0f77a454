//! The chroot a layer's packages install in: apt's environment, the mounts
//! and placeholders around each run (and their undo), and the programs
//! that are no-ops while the image is built (also as mmdebstrap hooks for
//! the base layer).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::execute::Ctx;
use crate::mounts::Mounts;
use nib_host::cmd::sh_quote;
use nib_host::Cmd;

pub(super) fn apt_env(r: Cmd, epoch: u64) -> Cmd {
    r.env_clear()
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("LC_ALL", "C.UTF-8")
        .env("LANG", "C.UTF-8")
        .env("HOME", "/root")
}

/// `apt-get install` of `packages` in `root`, in a chroot that never starts
/// a service; the chroot is undone whether it succeeds or not.
pub(super) fn install(ctx: &Ctx, root: &Path, work: &Path, packages: &[String]) -> Result<()> {
    let mut m = Mounts::default();
    let temps = chroot_setup(ctx, root, work, &mut m)?;
    let mut run = apt_env(Cmd::new("chroot"), ctx.img.epoch);
    if ctx.nosync.is_some() {
        run = run.env("LD_PRELOAD", crate::nosync::IN_ROOT);
    }
    let r = run
        .arg(root)
        .args([
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-unsafe-io",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            "-o",
            "Dpkg::Use-Pty=0",
            "-o",
            "APT::Sandbox::User=root",
            "-o",
            "Dir::Cache::pkgcache=",
            // apt's cache of the package lists (not of the root's
            // status, which each layer changes) beside the lists it
            // caches, outside the image: parsed once per index
            // instead of once per layer (~0.7 s each)
            "-o",
            "Dir::Cache::srcpkgcache=/var/lib/apt/lists/nib-srcpkgcache.bin",
        ])
        .args(packages)
        .run();
    m.unmount_all()?;
    chroot_teardown(root, &temps)?;
    Ok(r?)
}

/// Programs that maintainer scripts run and that nib turns into a no-op
/// while packages install: what they make is made once by nib itself, or is
/// not kept in the image.
pub const BUILD_NOOPS: &[&str] = &[
    // the initramfs is made once, for the final content, in finalize
    "/usr/sbin/update-initramfs",
    // man-db indexes man pages the image does not ship (dpkg path filters)
    "/usr/bin/mandb",
    // no Python bytecode in the image (~34 MB): Python compiles a module
    // into __pycache__ the first time it is imported on the node
    "/usr/bin/py3compile",
    "/usr/bin/pypy3compile",
    // the MariaDB datadir is per node (clean empties it): nib-firstboot
    // runs mariadb-install-db on the node
    "/usr/bin/mysql_install_db",
    // ssh host keys are per node (clean removes any): nib-firstboot makes
    // them on the node; openssh-server's postinst would spend ~1 s on them
    "/usr/bin/ssh-keygen",
];

/// What a no-op program is while the image is built.
const NOOP_SCRIPT: &[u8] = b"#!/bin/sh\n# nib: not run while the image is built\nexit 0\n";

/// Shell commands for mmdebstrap's hooks ("$1" is the root): divert each of
/// BUILD_NOOPS away and put the no-op in its place; and the undo.
pub(super) fn noop_hooks() -> (String, String) {
    let mut on = Vec::new();
    let mut off = Vec::new();
    for prog in BUILD_NOOPS {
        on.push(format!(
            "chroot \"$1\" dpkg-divert --quiet --local --rename --divert {prog}.nib-build --add {prog} && printf '%s' {} > \"$1{prog}\" && chmod 0755 \"$1{prog}\"",
            sh_quote(std::str::from_utf8(NOOP_SCRIPT).unwrap_or_default())
        ));
        off.push(format!(
            "rm -f \"$1{prog}\" && chroot \"$1\" dpkg-divert --quiet --local --rename --remove {prog}"
        ));
    }
    (on.join(" && "), off.join(" && "))
}

/// Mount what a chroot needs and make BUILD_NOOPS no-ops: a program already
/// there gets the no-op bind-mounted over it (nothing is copied up into the
/// layer); one a package may install now is diverted away (dpkg puts it at
/// `<path>.nib-build`) until `chroot_teardown`.
fn chroot_setup(ctx: &Ctx, root: &Path, work: &Path, m: &mut Mounts) -> Result<ChrootTemps> {
    let mut t = ChrootTemps::default();
    m.chroot_basics(root)?;
    m.bind(&ctx.lists, &root.join("var/lib/apt/lists"))?;
    let archives = work.join("archives");
    fs::create_dir_all(archives.join("partial"))?;
    m.bind(&archives, &root.join("var/cache/apt/archives"))?;
    let prc = root.join("usr/sbin/policy-rc.d");
    nib_host::write::write_file(
        &prc,
        b"#!/bin/sh\n# nib: no service starts while building\nexit 101\n",
        0o755,
    )?;
    t.files.push(prc);
    let noop = work.join("nib-noop");
    nib_host::write::write_file(&noop, NOOP_SCRIPT, 0o755)?;
    for prog in BUILD_NOOPS {
        let path = root.join(prog.trim_start_matches('/'));
        if fs::symlink_metadata(&path).is_ok() {
            m.bind(&noop, &path)?;
        } else {
            dpkg_divert(
                root,
                &["--divert", &format!("{prog}.nib-build"), "--add", prog],
            )?;
            nib_host::write::write_file(&path, NOOP_SCRIPT, 0o755)?;
            t.diverted.push(prog);
        }
    }
    // dpkg-deb answering from the uncompressed package data (plain.rs): the
    // root's own seen at plain::REAL_IN_ROOT, the wrapper over it
    let dpkg_deb = root.join("usr/bin/dpkg-deb");
    if dpkg_deb.is_file() {
        let real = root.join(crate::plain::REAL_IN_ROOT.trim_start_matches('/'));
        nib_host::write::write_file(&real, b"", 0o755)?;
        t.files.push(real.clone());
        m.bind(&dpkg_deb, &real)?;
        let wrapper = work.join("nib-dpkg-deb");
        nib_host::write::write_file(
            &wrapper,
            crate::plain::wrapper(crate::plain::REAL_IN_ROOT).as_bytes(),
            0o755,
        )?;
        m.bind(&wrapper, &dpkg_deb)?;
    }
    let resolv = root.join("etc/resolv.conf");
    if Path::new("/etc/resolv.conf").is_file() && fs::symlink_metadata(&resolv).is_err() {
        fs::write(&resolv, b"")?;
        t.files.push(resolv.clone());
        m.bind(Path::new("/etc/resolv.conf"), &resolv)?;
    }
    if let Some(pins) = &ctx.pins {
        let pf = root.join("etc/apt/preferences.d/nib-lock");
        nib_host::write::write_file(&pf, pins.as_bytes(), 0o644)?;
        t.files.push(pf);
    }
    if let Some(lib) = &ctx.nosync {
        let at = root.join(crate::nosync::IN_ROOT.trim_start_matches('/'));
        nib_host::write::write_file(&at, b"", 0o644)?;
        t.files.push(at.clone());
        m.bind(lib, &at)?;
    }
    Ok(t)
}

/// mmdebstrap hooks ("$1" is the root) that put `script` in place of
/// `prog` once the Essential packages are extracted (before dpkg first
/// runs), as a local diversion (dpkg then unpacks the real one to
/// `<prog>.nib-build`), and undo it.
pub(super) fn bootstrap_wrap(prog: &str, script: &Path) -> (String, String) {
    let on = format!(
        "mv \"$1{prog}\" \"$1{prog}.nib-build\" && cp {} \"$1{prog}\" && chmod 0755 \"$1{prog}\" && printf '%s\\n' {prog} {prog}.nib-build : >> \"$1/var/lib/dpkg/diversions\"",
        sh_quote(&script.display().to_string())
    );
    let off = format!(
        "rm -f \"$1{prog}\" && chroot \"$1\" dpkg-divert --quiet --local --rename --remove {prog}"
    );
    (on, off)
}

/// The build host's `name`, found in PATH.
pub(super) fn host_program(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found in PATH"))
}

/// Placeholders `chroot_setup` put in a root, and the programs it diverted.
#[derive(Default)]
struct ChrootTemps {
    files: Vec<PathBuf>,
    diverted: Vec<&'static str>,
}

/// Undo `chroot_setup` once `m` is unmounted: placeholders go, diverted
/// programs (installed meanwhile or not) are put back under their names.
fn chroot_teardown(root: &Path, t: &ChrootTemps) -> Result<()> {
    remove_temps(&t.files)?;
    for prog in &t.diverted {
        crate::fsutil::remove_any(&root.join(prog.trim_start_matches('/')))?;
        dpkg_divert(root, &["--remove", prog])?;
    }
    Ok(())
}

/// A local, renaming dpkg-divert in `root`: the file moves with it.
fn dpkg_divert(root: &Path, args: &[&str]) -> Result<()> {
    Cmd::new("chroot")
        .arg(root)
        .args(["dpkg-divert", "--quiet", "--local", "--rename"])
        .args(args)
        .run()?;
    Ok(())
}

fn remove_temps(temps: &[PathBuf]) -> Result<()> {
    for t in temps {
        crate::fsutil::remove_any(t)?;
    }
    Ok(())
}
