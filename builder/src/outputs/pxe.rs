//! `pxe/`: the kernel, an initrd that can fetch the root over HTTP, the root
//! as a zstd squashfs, and `boot.ipxe`. The node runs from RAM: the
//! initramfs (boot method `nib`, from layer `base`) downloads
//! root.squashfs into a tmpfs and mounts it under a tmpfs overlay.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use nib_host::Cmd;

use super::{bootfiles, cpio, OutputContext};
use crate::error::invalid;

/// Where layer `base` puts the initramfs boot method (initramfs-tools copies
/// /etc/initramfs-tools/scripts/* to /scripts/ in the initrd).
pub const BOOT_SCRIPT: &str = "etc/initramfs-tools/scripts/nib";

/// Modules the boot method needs, by their path below /lib/modules/<ver>/kernel.
const MODULES: &[(&str, &str)] = &[
    ("loop", "drivers/block/loop"),
    ("squashfs", "fs/squashfs/squashfs"),
    ("overlay", "fs/overlayfs/overlay"),
];

/// The image's initrd with a small archive appended: the boot method and
/// the modules it loads. The kernel unpacks concatenated archives in order,
/// so this works whether or not the image's initrd was regenerated after
/// layer `base` added its hook.
pub fn initrd(ctx: &OutputContext<'_>, boot: &bootfiles::BootFiles) -> Result<Vec<u8>> {
    let script_path = bootfiles::resolve_in(ctx.rootfs, Path::new(BOOT_SCRIPT))?;
    let script = fs::read(&script_path).map_err(|e| {
        invalid(format!(
            "{}: the image has no /{BOOT_SCRIPT} ({e}); the pxe output needs layer `base`'s initramfs-tools files",
            ctx.rootfs.display()
        ))
    })?;
    let moddir = Path::new("lib/modules")
        .join(&boot.kernel_version)
        .join("kernel");
    let mut modules: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, rel) in MODULES {
        for ext in ["ko", "ko.xz", "ko.zst"] {
            let p = bootfiles::resolve_in(ctx.rootfs, &moddir.join(format!("{rel}.{ext}")))?;
            if p.is_file() {
                let data = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                modules.push((format!("nib/modules/{name}.{ext}"), data));
                break;
            }
        }
    }
    let mut entries = vec![
        cpio::Entry {
            path: "scripts",
            mode: 0o755,
            data: None,
        },
        cpio::Entry {
            path: "scripts/nib",
            mode: 0o644,
            data: Some(&script),
        },
        cpio::Entry {
            path: "nib",
            mode: 0o755,
            data: None,
        },
        cpio::Entry {
            path: "nib/modules",
            mode: 0o755,
            data: None,
        },
    ];
    for (path, data) in &modules {
        entries.push(cpio::Entry {
            path,
            mode: 0o644,
            data: Some(data),
        });
    }
    let mut out =
        fs::read(&boot.initrd).with_context(|| format!("reading {}", boot.initrd.display()))?;
    // archives start 4-byte aligned
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out.extend(cpio::write(
        &entries,
        ctx.epoch.min(u64::from(u32::MAX)) as u32,
    ));
    Ok(out)
}

/// `mksquashfs` of the root tree, zstd, reproducible: times from
/// SOURCE_DATE_EPOCH, sorted directory walk (-reproducible), xattrs kept
/// (file capabilities such as ping's). Level 6: level 15 took 7x as long
/// here for 2% less size.
pub fn squashfs(ctx: &OutputContext<'_>, dst: &Path) -> Result<()> {
    Cmd::new("mksquashfs")
        .arg(ctx.rootfs)
        .arg(dst)
        .args(["-noappend", "-no-progress", "-quiet", "-reproducible"])
        .args(["-comp", "zstd", "-Xcompression-level", "6", "-b", "1M"])
        // sets the superblock time and every inode time to the epoch
        // (mksquashfs refuses it together with -mkfs-time/-all-time)
        .env("SOURCE_DATE_EPOCH", ctx.epoch.to_string())
        .run()
        .context("making pxe/root.squashfs")?;
    Ok(())
}

/// The iPXE script. The operator's iPXE chain sets `nib-base` (URL of this
/// pxe/ directory, ending in /) and `nib-seed` (the node's NoCloud seed URL,
/// ending in /) and chains it.
pub fn ipxe_script(image: &str, kernel_version: &str) -> String {
    format!(
        "#!ipxe
# nib: PXE boot of image {image} (kernel {kernel_version}), root in RAM.
# Set, then chain this script, e.g. from your DHCP-served iPXE script:
#   set nib-base http://10.0.0.1/nib/{image}/pxe/
#   set nib-seed http://10.0.0.1/nib/seed/controller01/
#   chain ${{nib-base}}boot.ipxe
isset ${{nib-base}} || goto no_base
isset ${{nib-seed}} || goto no_seed
isset ${{nib-console}} || set nib-console console=tty0 console=ttyS0,115200n8
kernel ${{nib-base}}vmlinuz initrd=initrd.img boot=nib nib.root=${{nib-base}}root.squashfs ip=dhcp ${{nib-console}} ds=nocloud;s=${{nib-seed}} ${{nib-extra}}
initrd ${{nib-base}}initrd.img
boot
:no_base
echo nib: set nib-base to the URL of the pxe/ directory (ending in /) before chaining boot.ipxe
exit 1
:no_seed
echo nib: set nib-seed to the node's NoCloud seed URL (ending in /) before chaining boot.ipxe
exit 1
"
    )
}
