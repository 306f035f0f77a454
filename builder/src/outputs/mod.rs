//! Bootable outputs beside `rootfs.tar.zst`: `disk.raw` (+ `.bmap`, `.zst`),
//! `pxe/` (kernel, initrd, squashfs root, iPXE script) and `disk.qcow2`.
//! (Placeholder until the bootable-outputs issue lands.)

use std::path::{Path, PathBuf};

use crate::cli::OutputKind;

/// What the build knows when it makes the bootable outputs.
#[derive(Debug, Clone)]
pub struct OutputContext<'a> {
    /// The finished root filesystem as a directory tree (root-owned, final).
    pub rootfs: &'a Path,
    /// `out/<image>/`: outputs are written below it.
    pub out_dir: &'a Path,
    /// Image name, e.g. `controller-bookworm`.
    pub image: &'a str,
    /// SOURCE_DATE_EPOCH of the build: every timestamp is clamped to it.
    pub epoch: u64,
    /// sha256 hex of the rootfs tarball: seeds UUIDs and other identifiers so
    /// that they are stable across rebuilds and differ between images.
    pub rootfs_digest: &'a str,
}

/// One file the build produced, for `manifest.json` and `SHA256SUMS`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputRecord {
    /// Path relative to `out/<image>/`, e.g. `pxe/root.squashfs`.
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// Make every requested output other than `Rootfs` (the builder writes that
/// one itself). Atomic per file: a failure leaves no partial output behind.
pub fn build_outputs(
    ctx: &OutputContext<'_>,
    kinds: &[OutputKind],
) -> anyhow::Result<Vec<OutputRecord>> {
    if kinds.iter().any(|k| *k != OutputKind::Rootfs) {
        anyhow::bail!(
            "bootable outputs are not implemented yet (asked for {kinds:?} of {})",
            ctx.image
        );
    }
    Ok(Vec::new())
}
