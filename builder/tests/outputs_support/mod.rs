//! Shared by the outputs tests: where the root tree comes from, building
//! the outputs, QEMU and a loopback-only HTTP server, each stopped by a
//! Drop guard.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nib::cli::OutputKind;
use nib::outputs::{build_outputs, OutputContext, OutputRecord};

pub const EPOCH: u64 = 1_700_000_000;

/// The root tree to build from: `NIB_OUTPUTS_ROOTFS` is a directory, or a
/// `.tar`/`.tar.zst` (e.g. a build's rootfs.tar.zst) unpacked as root into
/// `scratch`. The tests that call it are `#[ignore]`d: `make test-outputs`
/// sets it and runs them.
pub fn rootfs(scratch: &Path) -> PathBuf {
    rootfs_named(scratch, "rootfs")
}

/// As [`rootfs`], unpacking into `scratch/<name>` (a tarball unpacked twice
/// gives two trees that differ in ctimes, atimes and inode numbers).
pub fn rootfs_named(scratch: &Path, name: &str) -> PathBuf {
    let src = PathBuf::from(std::env::var_os("NIB_OUTPUTS_ROOTFS").expect(
        "NIB_OUTPUTS_ROOTFS: a built root tree or rootfs.tar.zst (make test-outputs sets it)",
    ));
    if src.is_dir() {
        return src;
    }
    let dst = scratch.join(name);
    let _ = fs::remove_dir_all(&dst);
    fs::create_dir_all(&dst).expect("mkdir rootfs");
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&dst)
        .args(["--numeric-owner", "-xpf"])
        .arg(&src);
    if src.extension().is_some_and(|e| e == "zst") {
        tar.arg("--zstd");
    }
    let st = tar.status().expect("run tar");
    assert!(st.success(), "unpacking {} failed", src.display());
    dst
}

/// Build all bootable outputs of `root` into `out`.
pub fn build(root: &Path, out: &Path) -> Vec<OutputRecord> {
    let t = Instant::now();
    let recs = build_outputs(
        &OutputContext {
            rootfs: root,
            out_dir: out,
            image: "nib-test",
            epoch: EPOCH,
            rootfs_digest: "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
        },
        &[OutputKind::Raw, OutputKind::Pxe, OutputKind::Qcow2],
    )
    .unwrap_or_else(|e| panic!("building outputs into {}: {e:#}", out.display()));
    eprintln!(
        "outputs built in {:.0?} into {}",
        t.elapsed(),
        out.display()
    );
    recs
}

/// Outputs for the boot tests: `NIB_BOOT_OUT` (an existing out/<image>/ dir),
/// else built from the root tree into the target dir.
pub fn boot_outputs(name: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("NIB_BOOT_OUT") {
        return PathBuf::from(d);
    }
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("outputs-{name}"));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).expect("mkdir");
    let root = rootfs(&scratch);
    let out = scratch.join("out");
    build(&root, &out);
    out
}

/// A running QEMU; killed and reaped on drop.
pub struct Qemu {
    child: Child,
    pub serial: PathBuf,
}

impl Qemu {
    /// `mem`: MiB of guest RAM (a PXE node holds its root in RAM).
    pub fn start(args: &[String], mem: u32, serial: &Path) -> Qemu {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-m", &mem.to_string()])
            .args([
                "-accel",
                "tcg",
                "-smp",
                "2",
                "-display",
                "none",
                "-monitor",
                "none",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        eprintln!("exec: {cmd:?}");
        let child = cmd
            .spawn()
            .expect("start qemu-system-x86_64 (apt qemu-system-x86)");
        Qemu {
            child,
            serial: serial.to_path_buf(),
        }
    }

    /// Wait until the serial log matches `want` (all of the needles, in
    /// one line); panic with the log's tail on timeout or QEMU exit.
    pub fn wait_for(
        &mut self,
        what: &str,
        want: &dyn Fn(&str) -> bool,
        timeout: Duration,
    ) -> Duration {
        let t = Instant::now();
        loop {
            let log = fs::read(&self.serial).unwrap_or_default();
            let log = String::from_utf8_lossy(&log).replace('\r', "");
            if log.lines().any(want) {
                return t.elapsed();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "qemu exited ({st}) before {what}: {err}\n--- serial tail ---\n{}",
                    tail(&log, 60)
                );
            }
            if t.elapsed() > timeout {
                panic!(
                    "no {what} on the serial console within {timeout:?}\n--- serial tail ---\n{}",
                    tail(&log, 60)
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A static file server on 127.0.0.1 (ephemeral port) for the PXE test;
/// the guest reaches it through QEMU's user-mode network as 10.0.2.2.
/// Stopped on drop.
pub struct HttpServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl HttpServer {
    pub fn start(root: &Path) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (root, stop2, log2) = (root.to_path_buf(), stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, log) = (root.clone(), log2.clone());
                std::thread::spawn(move || serve(conn, &root, &log));
            }
        });
        HttpServer {
            port,
            stop,
            thread: Some(thread),
            log,
        }
    }
}

fn serve(mut conn: TcpStream, root: &Path, log: &std::sync::Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h.trim().is_empty() {
            break;
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let rel = path.trim_start_matches('/');
    let file = root.join(rel);
    if let Ok(mut l) = log.lock() {
        l.push(path.clone());
    }
    match (rel.contains(".."), fs::File::open(&file)) {
        (false, Ok(mut f)) if file.is_file() => {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            let _ = std::io::copy(&mut f, &mut conn);
        }
        _ => {
            let _ = write!(
                conn,
                "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The role data the boot tests seed the node with (the example pair).
pub fn cluster_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cluster.toml")
}

/// The node the boot tests bring up, and the hostname its seed gives.
pub const NODE: &str = "controller01";

/// `nib seed` for [`NODE`]: a CIDATA vfat image (`dir` false) or a
/// directory to serve over HTTP.
pub fn seed(out: &Path, dir: bool) -> PathBuf {
    let st = Command::new(env!("CARGO_BIN_EXE_nib"))
        .arg("seed")
        .arg(cluster_fixture())
        .args(["--node", NODE, "--format", if dir { "dir" } else { "vfat" }])
        .arg("--out")
        .arg(out)
        .status()
        .expect("run nib seed");
    assert!(st.success(), "nib seed failed");
    out.to_path_buf()
}

/// Whether the image carries nib-firstboot: then the console must show the
/// seed's hostname at the login prompt; before it lands, a login prompt.
pub fn image_has_firstboot(squashfs_or_root: &Path) -> bool {
    let out = Command::new("unsquashfs")
        .arg("-l")
        .arg(squashfs_or_root)
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.ends_with("/nib-firstboot.service")),
        Err(_) => false,
    }
}
