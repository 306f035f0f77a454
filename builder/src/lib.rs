//! nib: builds immutable, reproducible controller images (see
//! builder/doc/DESIGN.md, "Builder").
//! `main.rs` only parses and dispatches; everything else lives here.

pub mod arbiter;
pub mod build;
pub mod cache;
pub mod clean;
pub mod cli;
pub mod debs;
pub mod dpkgfilter;
pub mod error;
pub mod flash;
pub mod fsutil;
pub mod image;
pub mod index;
pub mod initramfs;
pub mod inspect;
pub mod manifest;
pub mod mounts;
pub mod nosync;
pub mod outputs;
pub mod plain;
pub mod plan;
pub mod progress;
pub mod seal;
pub mod seed_cmd;
pub mod verify;

/// Which `--outputs` kind produced an output file (for `nib verify`).
pub fn outputs_kind(path: &std::path::Path) -> Option<cli::OutputKind> {
    let s = path.to_string_lossy();
    if s == "rootfs.tar.zst" {
        Some(cli::OutputKind::Rootfs)
    } else if s.starts_with("pxe/") {
        Some(cli::OutputKind::Pxe)
    } else if s.ends_with(".qcow2") {
        Some(cli::OutputKind::Qcow2)
    } else if s.starts_with("disk.raw") {
        Some(cli::OutputKind::Raw)
    } else {
        None
    }
}
