//! `nib flash` against regular files (never a real disk) and our block map
//! against bmaptool's own reader.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use nib::outputs::bmap;

/// A sparse 8 MiB image with data in a few places, some of it zeros that
/// must still be written (mapped), and its bmap.
fn sample_image(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("disk.raw");
    let mut f = File::create(&img).expect("create");
    f.set_len(8 << 20).expect("len");
    let mut ranges = Vec::new();
    for (off, byte, len) in [
        (0u64, 0xabu8, 4096usize),
        (1 << 20, 0, 8192),
        (5 << 20, 0x5a, 12288),
    ] {
        f.seek(SeekFrom::Start(off)).expect("seek");
        f.write_all(&vec![byte; len]).expect("write");
        ranges.push((off, off + len as u64));
    }
    f.sync_all().expect("sync");
    let map = bmap::create(&img, &ranges).expect("bmap");
    fs::write(dir.join("disk.raw.bmap"), bmap::to_xml(&map)).expect("write bmap");
    img
}

fn nib() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nib"))
}

#[test]
fn flash_to_file_reproduces_image_over_garbage() {
    let d = tempfile::tempdir().expect("tempdir");
    let img = sample_image(d.path());
    let target = d.path().join("target");
    fs::write(&target, vec![0xffu8; 9 << 20]).expect("garbage");
    let out = nib()
        .arg("flash")
        .arg(&img)
        .arg(&target)
        .args(["--yes", "--to-file"])
        .output()
        .expect("run nib");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verified"), "{stdout}");
    assert_eq!(
        fs::read(&img).expect("img"),
        fs::read(&target).expect("target")
    );
}

#[test]
fn flash_refuses_plain_file_without_flag_and_changes_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let img = sample_image(d.path());
    let target = d.path().join("target");
    fs::write(&target, b"keep me").expect("write");
    let out = nib()
        .arg("flash")
        .arg(&img)
        .arg(&target)
        .arg("--yes")
        .output()
        .expect("run nib");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to-file"));
    assert_eq!(fs::read(&target).expect("target"), b"keep me");
}

#[test]
fn flash_rejects_corrupt_image_before_writing() {
    let d = tempfile::tempdir().expect("tempdir");
    let img = sample_image(d.path());
    // flip a byte inside a mapped range
    let mut f = fs::OpenOptions::new().write(true).open(&img).expect("open");
    f.seek(SeekFrom::Start((5 << 20) + 100)).expect("seek");
    f.write_all(&[0x00]).expect("write");
    drop(f);
    let target = d.path().join("target");
    let out = nib()
        .arg("flash")
        .arg(&img)
        .arg(&target)
        .args(["--yes", "--to-file"])
        .output()
        .expect("run nib");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("do not match the block map"), "{err}");
    assert!(!target.exists(), "target must not be created");
}

#[test]
fn flash_without_confirmation_on_non_tty_is_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    let img = sample_image(d.path());
    let target = d.path().join("target");
    let out = nib()
        .arg("flash")
        .arg(&img)
        .arg(&target)
        .arg("--to-file")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run nib");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(!target.exists());
}

/// bmaptool (the reference reader) accepts our map, checksums included,
/// and reproduces the image byte for byte.
#[test]
fn bmaptool_copy_with_our_bmap_reproduces_image() {
    // bmap-tools is in make test's APT_TEST: a missing bmaptool fails here.
    let d = tempfile::tempdir().expect("tempdir");
    let img = sample_image(d.path());
    let copy = d.path().join("copy");
    let out = Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(d.path().join("disk.raw.bmap"))
        .arg(&img)
        .arg(&copy)
        .output()
        .expect("bmaptool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&img).expect("img"), fs::read(&copy).expect("copy"));
}
