//! `disk.qcow2` for VM users: `qemu-img convert` of disk.raw. qcow2 has no
//! timestamps or random fields, so the same disk.raw gives the same bytes.

use std::path::Path;

use anyhow::{Context, Result};

use nib_host::Cmd;

pub fn convert(raw: &Path, dst: &Path) -> Result<()> {
    Cmd::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        // one writer: the cluster order on disk is the input order
        .args(["-m", "1"])
        .arg(raw)
        .arg(dst)
        .run()
        .context("making disk.qcow2")?;
    Ok(())
}
