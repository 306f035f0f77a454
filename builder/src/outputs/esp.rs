//! The EFI system partition as a FAT32 image file: mkfs.fat and mtools write
//! into the file directly (no mount). `--invariant` plus SOURCE_DATE_EPOCH
//! (honoured by mtools) make it bit-identical across builds.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use nib_host::Cmd;

/// One file to put on the ESP: source on the host, path on the ESP.
#[derive(Debug, Clone)]
pub struct EspFile {
    pub src: PathBuf,
    pub dst: String,
}

/// Size in bytes for an ESP holding `content` bytes: room for a second
/// kernel+initrd (operators may add one), at least 128 MiB, in 16 MiB steps.
pub fn size_for(content: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let want = content * 2 + 32 * MIB;
    want.div_ceil(16 * MIB).max(8) * 16 * MIB
}

fn mtools(cmd_name: &str, epoch: u64) -> Cmd {
    Cmd::new(cmd_name)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("MTOOLSRC", "/dev/null")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC")
}

/// Make `img` (must not exist) of `size` bytes with `files` on it.
pub fn make(img: &Path, size: u64, volume_id: u32, epoch: u64, files: &[EspFile]) -> Result<()> {
    Cmd::new("mkfs.fat")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["--invariant", "-i", &format!("{volume_id:08x}")])
        .args(["-C", "-F", "32", "-S", "512", "-s", "1", "-n", "ESP"])
        .arg(img)
        .arg((size / 1024).to_string())
        .run()
        .context("making the EFI system partition")?;

    let mut dirs: Vec<String> = Vec::new();
    for f in files {
        let mut acc = String::new();
        let parts: Vec<&str> = f.dst.trim_start_matches('/').split('/').collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            acc.push('/');
            acc.push_str(p);
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
            }
        }
    }
    let img_arg = img.as_os_str();
    if !dirs.is_empty() {
        let mut c = mtools("mmd", epoch).arg("-i").arg(img_arg);
        for d in &dirs {
            c = c.arg(format!("::{d}"));
        }
        c.run().context("making directories on the ESP")?;
    }
    for f in files {
        mtools("mcopy", epoch)
            .arg("-i")
            .arg(img_arg)
            .arg(&f.src)
            .arg(format!("::/{}", f.dst.trim_start_matches('/')))
            .run()
            .with_context(|| format!("copying {} to the ESP", f.dst))?;
    }
    Ok(())
}
