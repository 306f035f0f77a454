//! `disk.raw`: GPT, an EFI system partition with systemd-boot, the kernel,
//! initrd and one loader entry, and the ext4 root. Partitions and file
//! systems are made as files and copied in extent by extent, so the disk
//! image stays sparse and nothing is mounted.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::files::{copy_extents, derive_uuid, uuid_string};
use super::{bootfiles, esp, ext4, gpt, OutputContext};

const MIB: u64 = 1 << 20;

/// Where things landed, for the block map and for tests.
#[derive(Debug, Clone)]
pub struct DiskLayout {
    pub size: u64,
    pub esp_offset: u64,
    pub esp_size: u64,
    pub root_offset: u64,
    pub root_size: u64,
    pub root_partuuid: String,
    pub root_fs_uuid: String,
    pub cmdline: String,
    /// Byte ranges of disk.raw that hold data (for the bmap).
    pub written: Vec<(u64, u64)>,
}

/// The kernel command line of disk.raw: root by PARTUUID (stable across
/// rebuilds of the same image, unlike /dev/sdX), serial console last so that
/// /dev/console is the serial port on headless nodes.
pub fn cmdline(root_partuuid: &str, rootfs: &Path) -> String {
    let mut c = format!("root=PARTUUID={root_partuuid} rw console=tty0 console=ttyS0,115200n8");
    // An image may add options in /etc/kernel/cmdline (kernel-install's file).
    if let Ok(extra) = fs::read_to_string(rootfs.join("etc/kernel/cmdline")) {
        for w in extra.split_whitespace() {
            if !w.starts_with("root=") && !w.starts_with("console=") && w != "rw" && w != "ro" {
                c.push(' ');
                c.push_str(w);
            }
        }
    }
    c
}

/// Build `disk.raw` at `dst` (must not exist), using `scratch` for the
/// partition images.
pub fn build(ctx: &OutputContext<'_>, dst: &Path, scratch: &Path) -> Result<DiskLayout> {
    let boot = bootfiles::find(ctx.rootfs)?;
    let sdboot = bootfiles::systemd_boot(ctx.rootfs)?;
    let (tree, paths) = ext4::walk(ctx.rootfs)?;

    let esp_uuid = uuid_string(&derive_uuid(ctx.rootfs_digest, "esp-partition"));
    let root_partuuid = uuid_string(&derive_uuid(ctx.rootfs_digest, "root-partition"));
    let root_fs_uuid = uuid_string(&derive_uuid(ctx.rootfs_digest, "root-filesystem"));
    let hash_seed = uuid_string(&derive_uuid(ctx.rootfs_digest, "root-hash-seed"));
    let disk_guid = derive_uuid(ctx.rootfs_digest, "disk");
    let vol = derive_uuid(ctx.rootfs_digest, "esp-volume-id");
    let volume_id = u32::from_be_bytes([vol[0], vol[1], vol[2], vol[3]]);

    // ESP content
    let cmdline = cmdline(&root_partuuid, ctx.rootfs);
    let loader_conf = scratch.join("loader.conf");
    fs::write(&loader_conf, "default nib.conf\ntimeout 0\neditor no\n")?;
    let entry = scratch.join("nib.conf");
    fs::write(
        &entry,
        format!(
            "title {image} ({kver})\nlinux /nib/vmlinuz\ninitrd /nib/initrd.img\noptions {cmdline}\n",
            image = ctx.image,
            kver = boot.kernel_version
        ),
    )?;
    let esp_files = vec![
        esp::EspFile {
            src: sdboot.clone(),
            dst: "EFI/BOOT/BOOTX64.EFI".into(),
        },
        esp::EspFile {
            src: sdboot,
            dst: "EFI/systemd/systemd-bootx64.efi".into(),
        },
        esp::EspFile {
            src: loader_conf,
            dst: "loader/loader.conf".into(),
        },
        esp::EspFile {
            src: entry,
            dst: "loader/entries/nib.conf".into(),
        },
        esp::EspFile {
            src: boot.kernel.clone(),
            dst: "nib/vmlinuz".into(),
        },
        esp::EspFile {
            src: boot.initrd.clone(),
            dst: "nib/initrd.img".into(),
        },
    ];
    let content: u64 = esp_files
        .iter()
        .map(|f| fs::metadata(&f.src).map(|m| m.len()).unwrap_or(0))
        .sum();
    let esp_size = esp::size_for(content);
    let esp_img = scratch.join("esp.img");
    esp::make(&esp_img, esp_size, volume_id, ctx.epoch, &esp_files)?;

    let root_size = ext4::size_for(tree);
    let root_img = scratch.join("root.img");
    ext4::make(
        &root_img,
        root_size,
        ctx.rootfs,
        &paths,
        &ext4::Ext4Params {
            uuid: &root_fs_uuid,
            hash_seed: &hash_seed,
            label: "nib-root",
            epoch: ctx.epoch,
        },
        scratch,
    )?;

    // 1 MiB before the ESP (GPT + alignment), 1 MiB after root (backup GPT)
    let esp_offset = MIB;
    let root_offset = esp_offset + esp_size;
    let size = root_offset + root_size + MIB;
    let total_sectors = size / gpt::SECTOR;
    let parts = vec![
        gpt::Partition {
            type_guid: gpt::parse_uuid(gpt::TYPE_ESP)?,
            unique_guid: gpt::parse_uuid(&esp_uuid)?,
            first_lba: esp_offset / gpt::SECTOR,
            last_lba: (esp_offset + esp_size) / gpt::SECTOR - 1,
            name: "esp".into(),
        },
        gpt::Partition {
            type_guid: gpt::parse_uuid(gpt::TYPE_ROOT_X86_64)?,
            unique_guid: gpt::parse_uuid(&root_partuuid)?,
            first_lba: root_offset / gpt::SECTOR,
            last_lba: (root_offset + root_size) / gpt::SECTOR - 1,
            name: "root".into(),
        },
    ];

    let mut f = File::create_new(dst).with_context(|| format!("creating {}", dst.display()))?;
    f.set_len(size)?;
    let mut written = gpt::write(&mut f, total_sectors, &disk_guid, &parts)
        .with_context(|| format!("writing the partition table of {}", dst.display()))?;
    written.extend(copy_extents(&esp_img, &mut f, esp_offset)?);
    written.extend(copy_extents(&root_img, &mut f, root_offset)?);
    f.sync_all()?;
    fs::remove_file(&esp_img)?;
    fs::remove_file(&root_img)?;
    Ok(DiskLayout {
        size,
        esp_offset,
        esp_size,
        root_offset,
        root_size,
        root_partuuid,
        root_fs_uuid,
        cmdline,
        written,
    })
}

/// Paths of the staged disk outputs.
pub fn staged(stage: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        stage.join("disk.raw"),
        stage.join("disk.raw.bmap"),
        stage.join("disk.raw.zst"),
    )
}
