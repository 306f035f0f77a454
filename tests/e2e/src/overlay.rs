//! A node's root: an overlayfs whose lower dir is the shared unpacked image
//! and whose upper dir holds everything that node ever wrote.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug)]
pub struct Overlay {
    lower: PathBuf,
    dir: PathBuf,
    merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    /// Mount `lower` + `dir/upper` (+ `dir/work`) on `dir/root`.
    pub fn mount(lower: &Path, dir: &Path) -> Result<Self> {
        let upper = dir.join("upper");
        let work = dir.join("work");
        let merged = dir.join("root");
        for d in [&upper, &work, &merged] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        crate::log(&format!("mount overlay {} ({opts})", merged.display()));
        mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .with_context(|| format!("mounting overlay on {}", merged.display()))?;
        Ok(Overlay {
            lower: lower.to_path_buf(),
            dir: dir.to_path_buf(),
            merged,
            mounted: true,
        })
    }

    /// Unmount, drop everything written (upper and work dirs) and mount
    /// again: the root a freshly unpacked image would give (a replaced
    /// disk).
    pub fn reset(&mut self) -> Result<()> {
        self.unmount()?;
        for d in ["upper", "work"] {
            let p = self.dir.join(d);
            if p.exists() {
                fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        *self = Overlay::mount(&self.lower.clone(), &self.dir.clone())?;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.merged
    }

    /// Unmount; retries while busy, then detaches so a stuck user cannot
    /// keep the mount alive after the run.
    pub fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let mut last = Errno::UnknownErrno;
        for _ in 0..50 {
            match umount2(&self.merged, MntFlags::empty()) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {
                    self.mounted = false;
                    return Ok(());
                }
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(100));
        }
        crate::log(&format!(
            "teardown: {} busy ({last}); detaching",
            self.merged.display()
        ));
        umount2(&self.merged, MntFlags::MNT_DETACH)
            .with_context(|| format!("detaching {}", self.merged.display()))?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            crate::log(&format!("teardown: {e:#}"));
        }
    }
}
