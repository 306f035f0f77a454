//! Acceptance 3 and 4 of the bootable outputs on a real root tree: two
//! clean builds give identical digests for every output; bmaptool copy
//! reproduces disk.raw; qemu-img check passes; e2fsck finds the root clean.
//! Needs root and NIB_OUTPUTS_ROOTFS (a directory or rootfs.tar[.zst]).

mod outputs_support;

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::process::Command;

use outputs_support::*;
use sha2::{Digest, Sha256};

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn sha256_reader(mut r: impl Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

#[test]
#[ignore = "needs a built image; run by: make test-outputs"]
fn outputs_are_reproducible_and_check_clean() {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("outputs-image");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).expect("mkdir");
    let root = rootfs_named(&scratch, "rootfs-a");
    // the second build gets its own copy of the tree, as a clean build would
    let root_b = rootfs_named(&scratch, "rootfs-b");
    let a = scratch.join("a");
    let b = scratch.join("b");
    let ra = build(&root, &a);
    let rb = build(&root_b, &b);
    let list = |r: &[nib::outputs::OutputRecord]| {
        r.iter()
            .map(|x| format!("{} {} {}", x.sha256, x.size, x.path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    eprintln!("outputs:\n{}", list(&ra));
    assert_eq!(
        ra,
        rb,
        "two builds differ\n--- first ---\n{}\n--- second ---\n{}",
        list(&ra),
        list(&rb)
    );
    let names: Vec<String> = ra.iter().map(|r| r.path.display().to_string()).collect();
    for want in [
        "disk.qcow2",
        "disk.raw",
        "disk.raw.bmap",
        "disk.raw.zst",
        "pxe/boot.ipxe",
        "pxe/initrd.img",
        "pxe/root.squashfs",
        "pxe/vmlinuz",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    // records match the files
    for r in &ra {
        let got = sha256_reader(File::open(a.join(&r.path)).expect("open"));
        assert_eq!(got, r.sha256, "{}", r.path.display());
    }
    fs::remove_dir_all(&b).expect("rm b");
    if root_b != root {
        fs::remove_dir_all(&root_b).expect("rm rootfs-b");
    }
    let raw = a.join("disk.raw");
    let raw_sum = &ra
        .iter()
        .find(|r| r.path == Path::new("disk.raw"))
        .expect("raw")
        .sha256;

    // bmaptool copy with our bmap reproduces disk.raw byte for byte
    let copy = scratch.join("bmap-copy.raw");
    run_ok(
        Command::new("bmaptool")
            .args(["-q", "copy", "--bmap"])
            .arg(a.join("disk.raw.bmap"))
            .arg(&raw)
            .arg(&copy),
    );
    assert_eq!(
        &sha256_reader(File::open(&copy).expect("copy")),
        raw_sum,
        "bmaptool copy differs from disk.raw"
    );
    fs::remove_file(&copy).expect("rm");

    // disk.raw.zst decompresses to disk.raw
    let dec = zstd::stream::read::Decoder::new(File::open(a.join("disk.raw.zst")).expect("zst"))
        .expect("zstd");
    assert_eq!(
        &sha256_reader(dec),
        raw_sum,
        "disk.raw.zst does not decompress to disk.raw"
    );

    // qcow2: qemu-img check, and the same guest-visible content as disk.raw
    run_ok(
        Command::new("qemu-img")
            .arg("check")
            .arg(a.join("disk.qcow2")),
    );
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(&raw)
            .arg(a.join("disk.qcow2")),
    );

    // GPT: both headers and CRCs valid; root partition type and PARTUUID
    let v = run_ok(Command::new("sfdisk").arg("--verify").arg(&raw));
    assert!(v.contains("No errors detected"), "{v}");
    let dump = run_ok(Command::new("sfdisk").arg("--json").arg(&raw));
    let j: serde_json::Value = serde_json::from_str(&dump).expect("sfdisk json");
    let parts = j["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions")
        .clone();
    assert_eq!(parts.len(), 2, "{dump}");
    let root_start = parts[1]["start"].as_u64().expect("start") * 512;

    // the root filesystem is clean (e2fsck reads it in place at its offset)
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={root_start}", raw.display()))
        .output()
        .expect("e2fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    assert_eq!(
        fsck.status.code(),
        Some(0),
        "e2fsck -fn on the root partition:\n{text}"
    );
    eprintln!("{}", text.lines().last().unwrap_or(""));

    // the loader entry boots the root partition by PARTUUID
    let partuuid = parts[1]["uuid"].as_str().expect("uuid").to_lowercase();
    let esp = format!(
        "{}@@{}",
        raw.display(),
        parts[0]["start"].as_u64().expect("start") * 512
    );
    let entry = run_ok(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        &esp,
        "::/loader/entries/nib.conf",
    ]));
    assert!(
        entry.contains(&format!("root=PARTUUID={partuuid} rw")),
        "{entry}"
    );

    // the PXE initrd carries nib's boot method after the image's own archive
    let initrd = fs::read(a.join("pxe/initrd.img")).expect("initrd");
    let name = b"scripts\0";
    let tail_start = initrd
        .windows(110 + name.len())
        .rposition(|w| w.starts_with(b"070701") && &w[110..] == name)
        .expect("appended archive with scripts/");
    let names = nib::outputs::cpio::list(&initrd[tail_start..]);
    assert!(names.iter().any(|n| n == "scripts/nib"), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("nib/modules/squashfs.ko")),
        "{names:?}"
    );

    // the squashfs is zstd and holds the tree
    let s = run_ok(
        Command::new("unsquashfs")
            .arg("-s")
            .arg(a.join("pxe/root.squashfs")),
    );
    assert!(s.contains("Compression zstd"), "{s}");
    let _ = fs::remove_dir_all(&scratch);
}
