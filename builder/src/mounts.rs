//! Mounts for building layers. `nib build` first moves into a private mount
//! namespace: every mount it makes is invisible to the host and disappears
//! with the process, even after SIGKILL, so an interrupted build never leaves
//! stale mounts behind.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Enter a private mount namespace (root only).
pub fn enter_private_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("unshare(CLONE_NEWNS): nib build needs root")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private in the build's mount namespace")?;
    Ok(())
}

/// Mounts made by one step, unmounted in reverse order on drop.
#[derive(Default)]
pub struct Mounts {
    stack: Vec<PathBuf>,
}

impl Mounts {
    fn push(&mut self, p: &Path) {
        self.stack.push(p.to_path_buf());
    }

    pub fn overlay(
        &mut self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<()> {
        let lower = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let opts = format!(
            "lowerdir={lower},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off",
            upper.display(),
            work.display()
        );
        fs::create_dir_all(target)?;
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .with_context(|| format!("mounting overlay on {} ({opts})", target.display()))?;
        self.push(target);
        Ok(())
    }

    /// Read-only view of stacked layers (top first).
    pub fn overlay_ro(&mut self, lowers: &[PathBuf], target: &Path) -> Result<()> {
        fs::create_dir_all(target)?;
        if lowers.len() == 1 {
            self.bind(&lowers[0], target)?;
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .with_context(|| format!("remounting {} read-only", target.display()))?;
            return Ok(());
        }
        let lower = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let opts = format!("lowerdir={lower},redirect_dir=off,index=off,metacopy=off");
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(opts.as_str()),
        )
        .with_context(|| format!("mounting read-only overlay on {}", target.display()))?;
        self.push(target);
        Ok(())
    }

    pub fn bind(&mut self, src: &Path, target: &Path) -> Result<()> {
        mount(
            Some(src),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {} on {}", src.display(), target.display()))?;
        self.push(target);
        Ok(())
    }

    pub fn fs(
        &mut self,
        fstype: &str,
        target: &Path,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        mount(Some(fstype), target, Some(fstype), flags, data)
            .with_context(|| format!("mounting {fstype} on {}", target.display()))?;
        self.push(target);
        Ok(())
    }

    /// What a chroot that runs apt and maintainer scripts needs: /proc,
    /// /sys, a small /dev, and tmpfs on /run and /tmp so nothing they leave
    /// there lands in the layer.
    pub fn chroot_basics(&mut self, root: &Path) -> Result<()> {
        let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        self.fs(
            "proc",
            &root.join("proc"),
            nosuid | MsFlags::MS_NOEXEC,
            None,
        )?;
        self.fs(
            "sysfs",
            &root.join("sys"),
            nosuid | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
            None,
        )?;
        let dev = root.join("dev");
        self.fs(
            "tmpfs",
            &dev,
            MsFlags::MS_NOSUID,
            Some("mode=0755,size=16m"),
        )?;
        for d in ["null", "zero", "full", "random", "urandom", "tty"] {
            let t = dev.join(d);
            fs::write(&t, b"").with_context(|| format!("creating {}", t.display()))?;
            self.bind(&Path::new("/dev").join(d), &t)?;
        }
        fs::create_dir_all(dev.join("pts"))?;
        self.fs(
            "devpts",
            &dev.join("pts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
        std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"))?;
        std::os::unix::fs::symlink("/proc/self/fd", dev.join("fd"))?;
        for (i, n) in ["stdin", "stdout", "stderr"].iter().enumerate() {
            std::os::unix::fs::symlink(format!("/proc/self/fd/{i}"), dev.join(n))?;
        }
        fs::create_dir_all(dev.join("shm"))?;
        self.fs("tmpfs", &dev.join("shm"), nosuid, Some("mode=1777"))?;
        self.fs("tmpfs", &root.join("run"), nosuid, Some("mode=0755"))?;
        self.fs("tmpfs", &root.join("tmp"), nosuid, Some("mode=1777"))?;
        Ok(())
    }

    /// Unmount everything now (errors reported), in reverse order.
    pub fn unmount_all(&mut self) -> Result<()> {
        while let Some(p) = self.stack.pop() {
            umount2(&p, MntFlags::empty())
                .or_else(|_| umount2(&p, MntFlags::MNT_DETACH))
                .with_context(|| format!("unmounting {}", p.display()))?;
        }
        Ok(())
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        while let Some(p) = self.stack.pop() {
            let _ = umount2(&p, MntFlags::MNT_DETACH);
        }
    }
}
