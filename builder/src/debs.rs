//! The shared package cache: `.deb` files stored by the sha256 that the
//! (verified) Packages index gives, checked on every use, fetched in
//! parallel, and handed to apt as hard links in its archives directory, so
//! apt and mmdebstrap find everything local and download nothing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cache::Cache;
use crate::image::sha256_file;
use crate::index::Package;
use nib_host::Cmd;

#[derive(Debug, Default, Clone, Copy)]
pub struct StageStats {
    pub reused: usize,
    pub downloaded: usize,
    pub corrupt: usize,
    pub bytes_downloaded: u64,
}

/// `f` over `items` on every core (each thread takes the next item, so one
/// big file does not hold up a whole share), results in order.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Whether each file's sha256 is the one given with it.
pub fn par_verify(paths: &[(std::path::PathBuf, String)]) -> Vec<bool> {
    par_map(paths, |(p, want)| {
        sha256_file(p).map(|h| &h == want).unwrap_or(false)
    })
}

/// Each file's sha256.
pub fn par_digest(paths: &[std::path::PathBuf]) -> Vec<Result<String>> {
    par_map(paths, |p| sha256_file(p))
}

/// Make sure every package of `pkgs` is in the store: verify those that
/// are (a corrupt one is dropped), fetch the rest in parallel.
pub fn ensure(cache: &Cache, mirror: &str, pkgs: &[&Package]) -> Result<StageStats> {
    let store = cache.deb_blobs();
    fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
    let mut stats = StageStats::default();
    let present: Vec<(std::path::PathBuf, String)> = pkgs
        .iter()
        .filter(|p| !p.sha256.is_empty())
        .map(|p| (store.join(&p.sha256), p.sha256.clone()))
        .filter(|(p, _)| p.is_file())
        .collect();
    for ((path, _), ok) in present.iter().zip(par_verify(&present)) {
        if ok {
            stats.reused += 1;
        } else {
            // Detected by its digest: drop it and fetch it again below.
            stats.corrupt += 1;
            fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let missing: Vec<&&Package> = pkgs
        .iter()
        .filter(|p| !p.sha256.is_empty() && !store.join(&p.sha256).is_file())
        .collect();
    if !missing.is_empty() {
        let cfg_path = cache.tmp().join("curl-debs.cfg");
        let mut cfg = fs::File::create(&cfg_path)
            .with_context(|| format!("creating {}", cfg_path.display()))?;
        for p in &missing {
            writeln!(
                cfg,
                "url = \"{}/{}\"\noutput = \"{}\"",
                mirror,
                p.filename,
                store.join(format!(".dl-{}", p.sha256)).display()
            )?;
        }
        drop(cfg);
        Cmd::new("curl")
            .args([
                "-fsSL",
                "--parallel",
                "--parallel-max",
                "8",
                "--retry",
                "3",
                "--connect-timeout",
                "15",
                "-K",
            ])
            .arg(&cfg_path)
            .run()
            .with_context(|| format!("downloading {} packages from {mirror}", missing.len()))?;
        let fetched: Vec<(std::path::PathBuf, String)> = missing
            .iter()
            .map(|p| (store.join(format!(".dl-{}", p.sha256)), p.sha256.clone()))
            .collect();
        for (((tmp, sha), ok), p) in fetched.iter().zip(par_verify(&fetched)).zip(&missing) {
            if !ok {
                let _ = fs::remove_file(tmp);
                bail!(
                    "{} {} from {mirror}: sha256 does not match the Packages index",
                    p.name,
                    p.version
                );
            }
            stats.bytes_downloaded += p.size;
            fs::rename(tmp, store.join(sha))
                .with_context(|| format!("storing {}", p.archive_name()))?;
        }
        stats.downloaded = missing.len();
    }
    Ok(stats)
}

/// Hard-link the (already ensured) packages into an apt archives dir.
pub fn link(cache: &Cache, pkgs: &[&Package], archives: &Path) -> Result<()> {
    let store = cache.deb_blobs();
    fs::create_dir_all(archives.join("partial"))
        .with_context(|| format!("creating {}", archives.display()))?;
    for p in pkgs.iter().filter(|p| !p.sha256.is_empty()) {
        let dest = archives.join(p.archive_name());
        if dest.exists() {
            continue;
        }
        let src = store.join(&p.sha256);
        if !src.is_file() {
            continue; // apt fetches it; harvest() keeps it
        }
        if fs::hard_link(&src, &dest).is_err() {
            fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// Take into the store any .deb apt fetched itself (one the prefetch did not
/// foresee), then empty `archives`.
pub fn harvest(cache: &Cache, archives: &Path) -> Result<usize> {
    let mut n = 0;
    let Ok(rd) = fs::read_dir(archives) else {
        return Ok(0);
    };
    for e in rd {
        let e = e?;
        let p = e.path();
        let meta = fs::symlink_metadata(&p)?;
        if meta.is_file() && p.extension().is_some_and(|x| x == "deb") {
            if meta.nlink() == 1 {
                let sha = sha256_file(&p)?;
                let dest = cache.deb_blobs().join(&sha);
                if !dest.exists() {
                    fs::rename(&p, &dest).with_context(|| format!("storing {}", p.display()))?;
                    n += 1;
                    continue;
                }
            }
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sha256_hex;

    fn pkg(name: &str, bytes: &[u8]) -> Package {
        Package {
            name: name.into(),
            version: "1:1.0".into(),
            arch: "all".into(),
            filename: format!("pool/{name}.deb"),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
            depends: Vec::new(),
            provides: Vec::new(),
            essential: false,
            required: false,
        }
    }

    #[test]
    fn corrupt_deb_in_store_is_detected_and_fetched_again() {
        let t = tempfile::tempdir().expect("tempdir");
        let mirror = t.path().join("mirror");
        fs::create_dir_all(mirror.join("pool")).expect("mkdir");
        fs::write(mirror.join("pool/a.deb"), b"package a").expect("write");
        fs::write(mirror.join("pool/b.deb"), b"package b").expect("write");
        let (a, b) = (pkg("a", b"package a"), pkg("b", b"package b"));
        let cache = Cache::open(&t.path().join("cache"), None).expect("cache");
        let url = format!("file://{}", mirror.display());
        let s = ensure(&cache, &url, &[&a, &b]).expect("first");
        assert_eq!((s.downloaded, s.reused, s.corrupt), (2, 0, 0));
        // flip the stored copy of a
        fs::write(cache.deb_blobs().join(&a.sha256), b"package A").expect("corrupt");
        let s = ensure(&cache, &url, &[&a, &b]).expect("second");
        assert_eq!((s.downloaded, s.reused, s.corrupt), (1, 1, 1));
        assert_eq!(
            fs::read(cache.deb_blobs().join(&a.sha256)).expect("read"),
            b"package a"
        );
        // linked under apt's name
        let arch = t.path().join("archives");
        link(&cache, &[&a], &arch).expect("link");
        assert!(arch.join("a_1%3a1.0_all.deb").is_file());
        // a mirror serving wrong bytes is refused, nothing stored
        let c = pkg("c", b"package c");
        fs::write(mirror.join("pool/c.deb"), b"evil").expect("write");
        let err = ensure(&cache, &url, &[&c]).expect_err("mismatch");
        assert!(format!("{err:#}").contains("sha256"), "{err:#}");
        assert!(!cache.deb_blobs().join(&c.sha256).exists());
        let stray: Vec<_> = fs::read_dir(cache.deb_blobs())
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(stray.is_empty(), "partial download left behind");
    }
}
