//! Acceptance 1 and 2 of the bootable outputs: boot disk.raw (UEFI, OVMF)
//! and the PXE kernel+initrd+squashfs in QEMU (TCG) and read the console.
//! Slow (1–3 min each here), and they need a root tree (NIB_OUTPUTS_ROOTFS)
//! or built outputs (NIB_BOOT_OUT) and QEMU with OVMF: `#[ignore]`d, run
//! by `make test-outputs`.

mod outputs_support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use outputs_support::*;

const TIMEOUT: Duration = Duration::from_secs(600);

/// What the console must show: with nib-firstboot in the image, the login
/// prompt carries the seed's hostname (firstboot applied it); without, any
/// login prompt (the image boots to multi-user).
type LineMatch = Box<dyn Fn(&str) -> bool>;

fn expectation(out: &Path) -> (String, LineMatch) {
    let host = NODE;
    if image_has_firstboot(&out.join("pxe/root.squashfs")) {
        let needle = format!("{host} login:");
        (
            format!("`{needle}`"),
            Box::new(move |l: &str| l.contains(&needle)),
        )
    } else {
        eprintln!("image has no nib-firstboot yet: checking for a login prompt only");
        (
            "a login prompt".into(),
            Box::new(|l: &str| l.contains(" login:")),
        )
    }
}

/// The console lines that show what happened, for the test log.
fn print_evidence(log: &str) {
    for l in log.lines().filter(|l| {
        l.contains("nib:")
            || l.contains("nib-firstboot")
            || l.contains("resized filesystem")
            || l.contains(" login:")
    }) {
        eprintln!("console: {}", l.trim());
    }
}

#[test]
#[ignore = "needs a built image and QEMU; run by: make test-outputs"]
fn disk_raw_boots_uefi_and_applies_seed() {
    let out = boot_outputs("disk");
    let d = tempfile::tempdir().expect("tempdir");
    let vars = d.path().join("OVMF_VARS.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF vars (apt ovmf)");
    // A bigger virtual disk over disk.raw: nib-growroot must grow into it;
    // disk.raw itself stays untouched.
    let overlay = d.path().join("overlay.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(out.join("disk.raw"))
        .arg(&overlay)
        .arg("6G")
        .status()
        .expect("qemu-img");
    assert!(st.success());
    let seed = seed(&d.path().join("cidata.img"), false);
    let (what, want) = expectation(&out);
    let serial = d.path().join("serial.log");
    let mut q = Qemu::start(
        &[
            "-machine".into(),
            "q35".into(),
            "-drive".into(),
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            "-drive".into(),
            format!("if=virtio,format=qcow2,file={}", overlay.display()),
            "-drive".into(),
            format!("if=virtio,format=raw,readonly=on,file={}", seed.display()),
            // no route anywhere: the node only needs its disk and seed
            "-netdev".into(),
            "user,id=n0,restrict=on".into(),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
        ],
        2048,
        &serial,
    );
    let took = q.wait_for(&what, &*want, TIMEOUT);
    eprintln!("disk.raw: {what} after {took:.0?}");
    let log = String::from_utf8_lossy(&fs::read(&serial).expect("serial")).replace('\r', "");
    print_evidence(&log);
    assert!(
        log.contains("EXT4-fs (vda2): resized filesystem"),
        "nib-growroot did not grow the root:\n{}",
        tail(&log, 80)
    );
}

#[test]
#[ignore = "needs a built image and QEMU; run by: make test-outputs"]
fn pxe_boots_from_http_and_applies_seed() {
    let out = boot_outputs("pxe");
    let d = tempfile::tempdir().expect("tempdir");
    // What an operator's HTTP server holds: pxe/, the node's seed dir, and
    // the chain script their DHCP/iPXE setup would hand out.
    let www = d.path().join("www");
    fs::create_dir_all(www.join("pxe")).expect("mkdir");
    for f in ["vmlinuz", "initrd.img", "root.squashfs", "boot.ipxe"] {
        fs::hard_link(out.join("pxe").join(f), www.join("pxe").join(f))
            .or_else(|_| fs::copy(out.join("pxe").join(f), www.join("pxe").join(f)).map(|_| ()))
            .expect("stage pxe file");
    }
    seed(&www.join("seed"), true);
    // QEMU's user network: the guest reaches the host's loopback as
    // 10.0.2.2 (slirp-internal); the server binds 127.0.0.1 only.
    let http = HttpServer::start(&www);
    let base = format!("http://10.0.2.2:{}", http.port);
    fs::write(
        www.join("chain.ipxe"),
        format!("#!ipxe\nset nib-base {base}/pxe/\nset nib-seed {base}/seed/\nchain ${{nib-base}}boot.ipxe\n"),
    )
    .expect("write");
    let (what, want) = expectation(&out);
    let serial = d.path().join("serial.log");
    let mut q = Qemu::start(
        &[
            "-machine".into(),
            "q35".into(),
            "-boot".into(),
            "n".into(),
            "-netdev".into(),
            format!("user,id=n0,bootfile={base}/chain.ipxe"),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
        ],
        3072,
        &serial,
    );
    let took = q.wait_for(&what, &*want, TIMEOUT);
    eprintln!("pxe: {what} after {took:.0?}");
    print_evidence(&String::from_utf8_lossy(&fs::read(&serial).expect("serial")).replace('\r', ""));
    let served = http.log.lock().map(|l| l.clone()).unwrap_or_default();
    for p in [
        "/pxe/boot.ipxe",
        "/pxe/vmlinuz",
        "/pxe/initrd.img",
        "/pxe/root.squashfs",
    ] {
        assert!(
            served.iter().any(|s| s == p),
            "{p} was not fetched; served: {served:?}"
        );
    }
}
