//! Builds the bookworm controller image for real (root, Debian's mirror),
//! scans what it contains, and checks layer reuse: a no-op rebuild reuses
//! everything, a change to one file of the top layer rebuilds only that
//! layer (and finalize). The layer cache is the workspace's `.cache/nib`
//! (as `make image`), so a rerun is warm.
//!
//! Needs root and `target/release/nib-firstboot` (`make test` builds both).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The release binary when there is one: a debug build seals ten times slower.
fn nib_bin() -> PathBuf {
    let rel = workspace_root().join("target/release/nib");
    if rel.is_file() {
        rel
    } else {
        PathBuf::from(env!("CARGO_BIN_EXE_nib"))
    }
}

/// Workspace copy: images, layers, unit files and the firstboot binary.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = workspace_root();
        let fb = root.join("target/release/nib-firstboot");
        assert!(
            fb.is_file(),
            "{} missing: run cargo build --release -p nib-firstboot",
            fb.display()
        );
        fs::create_dir_all(dir.path().join("target/release")).expect("mkdir");
        fs::create_dir_all(dir.path().join("firstboot")).expect("mkdir");
        for (from, to) in [
            (root.join("images"), dir.path().to_path_buf()),
            (root.join("layers"), dir.path().to_path_buf()),
            (root.join("firstboot/systemd"), dir.path().join("firstboot")),
            (root.join("firstboot/ocf"), dir.path().join("firstboot")),
            (fb, dir.path().join("target/release")),
        ] {
            let st = Command::new("cp")
                .arg("-r")
                .arg(&from)
                .arg(&to)
                .status()
                .expect("cp");
            assert!(st.success(), "copying {}", from.display());
        }
        Workspace { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, cache: &Path, extra: &[&str]) -> Output {
        Command::new(nib_bin())
            .args([
                "build",
                "images/controller-bookworm.toml",
                "--json",
                "--out",
                "out",
                "--cache",
            ])
            .arg(cache)
            .args(extra)
            .current_dir(self.path())
            .output()
            .expect("running nib build")
    }

    /// `nib build --json`; returns layer → "built"/"reused".
    fn build(&self, cache: &Path) -> BTreeMap<String, String> {
        let o = self.run(cache, &[]);
        assert!(o.status.success(), "{}", text(&o));
        let mut states = BTreeMap::new();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).expect("--json prints JSON lines");
            if v["event"] == "progress" {
                let msg = v["message"].as_str().unwrap_or("");
                for state in ["built", "reused"] {
                    if msg.starts_with(state) {
                        states.insert(
                            v["layer"].as_str().unwrap_or("").to_string(),
                            state.to_string(),
                        );
                    }
                }
            }
        }
        states
    }

    fn out(&self) -> PathBuf {
        self.path().join("out/controller-bookworm")
    }
}

struct Entry {
    kind: tar::EntryType,
    size: u64,
    mode: u32,
    head: Vec<u8>,
    link: Option<String>,
    /// A kernel module's `depends=` (from its .modinfo), names as written.
    ko_depends: Option<Vec<String>>,
}

/// The `depends=` field of a module's .modinfo section.
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.windows(key.len() + 1)
        .position(|w| w[0] == 0 && &w[1..] == key)
        .map(|i| {
            let v = &ko[i + 1 + key.len()..];
            let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end])
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn read_rootfs(path: &Path) -> BTreeMap<String, Entry> {
    let f = fs::File::open(path).expect("rootfs.tar.zst");
    let mut ar = tar::Archive::new(zstd::stream::Decoder::new(f).expect("zstd"));
    let mut out = BTreeMap::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").display().to_string();
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let kind = e.header().entry_type();
        let size = e.header().size().unwrap_or(0);
        let mode = e.header().mode().unwrap_or(0);
        let link = e
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.display().to_string());
        let mut head = Vec::new();
        let mut ko_depends = None;
        if kind == tar::EntryType::Regular && name.ends_with(".ko") {
            let mut all = Vec::new();
            e.read_to_end(&mut all).expect("read");
            ko_depends = Some(modinfo_depends(&all));
            head = all[..all.len().min(8192)].to_vec();
        } else if kind == tar::EntryType::Regular && name.ends_with("/modules.dep") {
            // whole: the module filter test reads every line
            e.read_to_end(&mut head).expect("read");
        } else if kind == tar::EntryType::Regular && size > 0 && size < (1 << 20) {
            (&mut e).take(8192).read_to_end(&mut head).expect("read");
        }
        out.insert(
            name,
            Entry {
                kind,
                size,
                mode,
                head,
                link,
                ko_depends,
            },
        );
    }
    out
}

/// The image's initramfs is what stock initramfs-tools makes in the same
/// root: the image is unpacked, its initrd and initramfs-tools' state
/// removed, and update-initramfs run there as nib runs it (chroot, empty
/// environment but SOURCE_DATE_EPOCH and LC_ALL=C) but without nib's
/// build-time hook-functions. Mounts live in a private mount namespace, so
/// they go with it. Returns the initrd's name when both are equal.
fn stock_initramfs_equal(rootfs: &Path, epoch: u64) -> Result<String, String> {
    let tmp = tempfile::tempdir_in(workspace_root().join("target")).expect("tempdir");
    let root = tmp.path().join("root");
    let f = fs::File::open(rootfs).expect("rootfs.tar.zst");
    let mut ar = tar::Archive::new(zstd::stream::Decoder::new(f).expect("zstd"));
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.unpack(&root).expect("unpacking the image");
    let initrd = fs::read_dir(root.join("boot"))
        .expect("boot")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("initrd.img-"))
        })
        .expect("an initrd in boot/");
    let built = fs::read(&initrd).expect("initrd");
    fs::remove_file(&initrd).expect("rm initrd");
    for e in fs::read_dir(root.join("var/lib/initramfs-tools")).expect("state") {
        fs::remove_file(e.expect("entry").path()).expect("rm state");
    }
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(
            "mount -t proc proc \"$1/proc\"; mount --rbind /sys \"$1/sys\"; \
             mount --rbind /dev \"$1/dev\"; mount -t tmpfs tmpfs \"$1/run\"; \
             mount -t tmpfs tmpfs \"$1/tmp\"; \
             exec chroot \"$1\" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
             SOURCE_DATE_EPOCH=\"$2\" LC_ALL=C update-initramfs -c -k all",
        )
        .arg("sh")
        .arg(&root)
        .arg(epoch.to_string())
        .output()
        .expect("running update-initramfs");
    if !o.status.success() {
        return Err(format!("stock update-initramfs failed: {}", text(&o)));
    }
    let stock = fs::read(&initrd).map_err(|e| format!("no stock initrd: {e}"))?;
    let name = initrd
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    if stock == built {
        Ok(name)
    } else {
        Err(format!(
            "{name}: {} bytes in the image, {} from stock initramfs-tools",
            built.len(),
            stock.len()
        ))
    }
}

/// A PEM private key block: the armour line, then base64 (code that merely
/// names the armour, as parsers do, is not a key).
fn has_pem_private_key(b: &[u8]) -> bool {
    const ARMOUR: &[u8] = b"PRIVATE KEY-----\n";
    b.windows(ARMOUR.len()).enumerate().any(|(i, w)| {
        w == ARMOUR && {
            let rest = &b[i + ARMOUR.len()..];
            rest.len() >= 40
                && rest[..40]
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        }
    })
}

/// Acceptance 4: nothing per-node, per-build or secret in the image.
fn scan(rootfs: &BTreeMap<String, Entry>) -> Vec<String> {
    let mut bad = Vec::new();
    for (name, e) in rootfs {
        let is_file = e.kind == tar::EntryType::Regular;
        if name.starts_with("etc/ssh/ssh_host_") {
            bad.push(format!("ssh host key {name}"));
        }
        if is_file && has_pem_private_key(&e.head) {
            bad.push(format!("private key in {name}"));
        }
        if e.link
            .as_deref()
            .is_some_and(|l| l.contains("ssl-cert-snakeoil"))
        {
            bad.push(format!("link to the snakeoil certificate {name}"));
        }
        if name.starts_with("etc/ssl/private/") {
            bad.push(format!("ssl private {name}"));
        }
        if name.contains("/mnesia") && name.starts_with("var/lib/rabbitmq") {
            bad.push(format!("rabbitmq mnesia {name}"));
        }
        if name == "var/lib/rabbitmq/.erlang.cookie" {
            bad.push("erlang cookie".into());
        }
        if let Some(rest) = name.strip_prefix("var/lib/apt/lists/") {
            if rest != "lock" && rest != "partial" && !rest.is_empty() {
                bad.push(format!("apt list {name}"));
            }
        }
        if name.starts_with("var/cache/apt/") && (name.ends_with(".bin") || name.ends_with(".deb"))
        {
            bad.push(format!("apt cache {name}"));
        }
        if name.starts_with("var/log/") && is_file && e.size > 0 {
            bad.push(format!("log content {name} ({} bytes)", e.size));
        }
        // qnetd's/qdevice's certificates and keys are made at first boot
        for db in [
            "etc/corosync/qnetd/nssdb/",
            "etc/corosync/qdevice/net/nssdb/",
        ] {
            if name.starts_with(db) && name.len() > db.len() {
                bad.push(format!("NSS database content {name}"));
            }
        }
        if name.starts_with("var/lib/mysql/") {
            bad.push(format!("mariadb datadir content {name}"));
        }
        if [
            "etc/pacemaker/authkey",
            "etc/corosync/authkey",
            "etc/corosync/corosync.conf",
            "var/lib/dbus/machine-id",
            "var/lib/systemd/random-seed",
            "var/cache/ldconfig/aux-cache",
        ]
        .contains(&name.as_str())
        {
            bad.push(format!("{name} present"));
        }
    }
    match rootfs.get("etc/machine-id") {
        Some(e) if e.size == 0 => {}
        Some(e) => bad.push(format!("etc/machine-id has {} bytes", e.size)),
        None => bad.push("etc/machine-id missing (must exist, empty)".into()),
    }
    bad
}

#[test]
#[ignore = "needs root and Debian's mirror (builds the bookworm image); run by: make test"]
fn bookworm_image_builds_scans_clean_and_reuses_layers() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test builds an image: run it as root (make test does)");
    }
    let cache = workspace_root().join(".cache/nib");
    let w = Workspace::new();

    // 1. Build (warm when make image or an earlier run filled the cache).
    let first = w.build(&cache);
    assert!(first.contains_key("rootfs"), "{first:?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(w.out().join("manifest.json")).expect("manifest"))
            .expect("json");
    let pkgs: BTreeMap<String, String> = manifest["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("n").to_string(),
                p["version"].as_str().expect("v").to_string(),
            )
        })
        .collect();
    for p in [
        "mariadb-server",
        "rabbitmq-server",
        "memcached",
        "corosync",
        "pacemaker",
        "resource-agents",
        "fence-agents",
        "crmsh",
        "openssh-server",
        "linux-image-amd64",
    ] {
        assert!(pkgs.contains_key(p), "{p} not in manifest");
    }
    let sums = fs::read_to_string(w.out().join("SHA256SUMS")).expect("SHA256SUMS");
    let rootfs_digest = manifest["outputs"][0]["sha256"]
        .as_str()
        .expect("digest")
        .to_string();
    assert!(
        sums.contains(&format!("{rootfs_digest}  rootfs.tar.zst")),
        "{sums}"
    );
    let lock =
        fs::read_to_string(w.path().join("images/controller-bookworm.lock")).expect("lock written");
    assert!(lock.contains("name = \"mariadb-server\""), "{lock}");

    // 2. Scan the image.
    let rootfs = read_rootfs(&w.out().join("rootfs.tar.zst"));
    let bad = scan(&rootfs);
    assert!(
        bad.is_empty(),
        "the image holds what it must not:\n{}",
        bad.join("\n")
    );
    let has = |p: &str| rootfs.contains_key(p);
    assert!(
        !has("etc/systemd/system/multi-user.target.wants/mariadb.service"),
        "mariadb must not start on boot"
    );
    assert!(has(
        "etc/systemd/system/multi-user.target.wants/corosync.service"
    ));
    assert!(has(
        "etc/systemd/system/multi-user.target.wants/pacemaker.service"
    ));
    // nib-firstboot.service is WantedBy=sysinit.target: it runs before networking.
    assert!(
        has("etc/systemd/system/sysinit.target.wants/nib-firstboot.service"),
        "first boot is enabled"
    );
    assert!(
        has("etc/systemd/system/mariadb.socket"),
        "mariadb.socket is masked: it must not hold port 3306 (pacemaker starts MariaDB)"
    );
    assert!(
        has("etc/systemd/system/corosync.service.requires/nib-firstboot.service"),
        "corosync waits for first boot"
    );
    assert!(has(
        "etc/systemd/system/pacemaker.service.requires/nib-firstboot.service"
    ));
    assert_eq!(
        rootfs.get("usr/bin/nib-firstboot").map(|e| e.mode & 0o7777),
        Some(0o755)
    );
    // the CIB's ocf:nib:mariadb, beside the heartbeat agent it runs
    assert_eq!(
        rootfs
            .get("usr/lib/ocf/resource.d/nib/mariadb")
            .map(|e| e.mode & 0o7777),
        Some(0o755),
        "ocf:nib:mariadb installed and executable"
    );
    assert!(has("usr/lib/ocf/resource.d/heartbeat/mariadb"));
    // the datadir is made at boot, but only MariaDB's start waits for it
    assert!(has(
        "etc/systemd/system/multi-user.target.wants/nib-datadir.service"
    ));
    assert!(!has(
        "etc/systemd/system/pacemaker.service.requires/nib-datadir.service"
    ));
    assert!(
        has("var/lib/mysql"),
        "the datadir itself stays (owned by mysql)"
    );
    assert!(
        rootfs.keys().any(|k| k.starts_with("boot/initrd.img-")),
        "initramfs made in finalize"
    );
    assert!(rootfs.keys().any(|k| k.starts_with("boot/vmlinuz-")));
    let docs: Vec<&String> = rootfs
        .keys()
        .filter(|k| {
            k.starts_with("usr/share/doc/")
                && k.matches('/').count() >= 4
                && !k.ends_with("/copyright")
        })
        .filter(|k| rootfs[*k].kind == tar::EntryType::Regular)
        .take(5)
        .collect();
    assert!(docs.is_empty(), "docs kept: {docs:?}");
    assert!(rootfs
        .keys()
        .any(|k| k.starts_with("usr/share/doc/") && k.ends_with("/copyright")));
    assert!(!rootfs
        .keys()
        .any(|k| k.starts_with("usr/share/man/") && rootfs[k].kind == tar::EntryType::Regular));

    // What nib puts in a root only while packages install (no-op programs,
    // the fsync-off library, the dpkg and dpkg-deb wrappers, the package
    // data copies) is gone, diversions too.
    let leftovers: Vec<&String> = rootfs
        .keys()
        .filter(|k| {
            k.ends_with(".nib-build")
                || k.contains("nib-nosync")
                || k.contains("nib-dpkg-deb")
                || k.contains("nib-plain")
                || k.ends_with("policy-rc.d")
        })
        .collect();
    assert!(leftovers.is_empty(), "build-time files left: {leftovers:?}");
    if let Some(d) = rootfs.get("var/lib/dpkg/diversions") {
        assert!(
            !String::from_utf8_lossy(&d.head).contains("nib"),
            "a build-time diversion is left"
        );
    }

    // The base layer's dpkg filters: no sound/media/Wi-Fi/... modules, and
    // depmod ran after them (modules.dep names only modules that are there);
    // wired NICs and virtio stay.
    let modules: Vec<&String> = rootfs
        .keys()
        .filter(|k| k.starts_with("usr/lib/modules/") && k.ends_with(".ko"))
        .collect();
    for dropped in [
        "/kernel/sound/",
        "/kernel/drivers/media/usb/",
        "/kernel/drivers/net/wireless/",
        "/kernel/drivers/infiniband/",
        "/kernel/drivers/gpu/drm/amd/",
    ] {
        let kept: Vec<&&String> = modules
            .iter()
            .filter(|k| k.contains(dropped))
            .take(3)
            .collect();
        assert!(kept.is_empty(), "filtered modules unpacked: {kept:?}");
    }
    // every kept module can load: what its .modinfo says it depends on is
    // in the image too (depmod silently drops a dependency it cannot find)
    let name_of = |k: &str| {
        k.rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".ko")
            .replace('-', "_")
    };
    let names: BTreeSet<String> = modules.iter().map(|k| name_of(k)).collect();
    let mut broken = Vec::new();
    for k in &modules {
        for d in rootfs[*k].ko_depends.as_deref().unwrap_or_default() {
            if !names.contains(&d.replace('-', "_")) {
                broken.push(format!("{} needs {d}", name_of(k)));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "modules whose dependencies were filtered out: {broken:?}"
    );
    for wanted in [
        "/e1000e.ko",
        "/virtio_net.ko",
        "/igb.ko",
        "/ext4.ko",
        "/i915.ko",
        "/cec.ko",
    ] {
        assert!(
            modules.iter().any(|k| k.ends_with(wanted)),
            "{wanted} missing from the image's modules"
        );
    }
    let dep_name = rootfs
        .keys()
        .find(|k| k.starts_with("usr/lib/modules/") && k.ends_with("/modules.dep"))
        .expect("modules.dep")
        .clone();
    let moddir = dep_name.trim_end_matches("modules.dep").to_string();
    let dep = String::from_utf8_lossy(&rootfs[&dep_name].head).into_owned();
    assert!(
        dep.lines().count() > 1000,
        "modules.dep too short: {}",
        dep.len()
    );
    for line in dep.lines() {
        let m = line.split(':').next().unwrap_or_default();
        assert!(
            rootfs.contains_key(&format!("{moddir}{m}")),
            "modules.dep names {m}, which is not in the image"
        );
    }

    // 2b. nib's fork-light copy_file (builder/src/initramfs-fast.sh) made
    // the same initramfs as stock initramfs-tools would.
    let epoch = manifest["epoch"].as_u64().expect("epoch in the manifest");
    if let Err(e) = stock_initramfs_equal(&w.out().join("rootfs.tar.zst"), epoch) {
        panic!("the initramfs differs from stock initramfs-tools': {e}");
    }

    // 3. No-op: every layer reused.
    let noop = w.build(&cache);
    assert!(
        noop.values().all(|s| s == "reused"),
        "no-op rebuilt something: {noop:?}"
    );
    assert_eq!(
        fs::read_to_string(w.out().join("SHA256SUMS")).expect("sums"),
        sums,
        "no-op build changed the output"
    );

    // 3b. --locked: the lock just written is installable (all reused), a
    // lock naming a version the mirror lacks is refused before building.
    let lock_path = w.path().join("images/controller-bookworm.lock");
    let locked = w.run(&cache, &["--locked"]);
    assert!(locked.status.success(), "{}", text(&locked));
    let good_lock = fs::read_to_string(&lock_path).expect("lock");
    let version = pkgs["memcached"].clone();
    fs::write(
        &lock_path,
        good_lock.replace(
            &format!("name = \"memcached\"\nversion = \"{version}\""),
            "name = \"memcached\"\nversion = \"0.0-nib-bogus\"",
        ),
    )
    .expect("lock");
    let bad = w.run(&cache, &["--locked"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("memcached 0.0-nib-bogus"),
        "{}",
        text(&bad)
    );
    fs::write(&lock_path, &good_lock).expect("restore lock");

    // 3c. A package the mirror lacks: exit 2 naming it and its layer.
    let mc = w.path().join("layers/memcached/layer.toml");
    let mc_text = fs::read_to_string(&mc).expect("layer");
    fs::write(
        &mc,
        mc_text.replace(
            "[\"memcached\"]",
            "[\"memcached\", \"nib-no-such-package\"]",
        ),
    )
    .expect("write");
    let o = w.run(&cache, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("nib-no-such-package (layers/memcached/layer.toml)"),
        "{}",
        text(&o)
    );
    fs::write(&mc, mc_text).expect("restore");

    // 4. One file of the top layer changed: only it (and finalize) rebuilt.
    let marker = w.path().join("layers/firstboot/files/etc/nib-test-marker");
    fs::create_dir_all(marker.parent().expect("parent")).expect("mkdir");
    let stamp = format!("{:?}\n", std::time::SystemTime::now());
    fs::write(&marker, &stamp).expect("marker");
    // 4a. Killed mid-build (SIGKILL): no mount leaks into the host, nothing
    // partial is kept, and the next build (4b) succeeds.
    let mut child = Command::new(nib_bin())
        .args([
            "build",
            "images/controller-bookworm.toml",
            "--quiet",
            "--out",
            "out",
            "--cache",
        ])
        .arg(&cache)
        .current_dir(w.path())
        .spawn()
        .expect("spawn nib build");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    child.kill().expect("kill");
    child.wait().expect("wait");
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&cache.display().to_string()),
        "a killed build left mounts behind:\n{mounts}"
    );
    // 4b. The change that counts (the killed build may have finished the
    // top layer of its own change already).
    let stamp = format!("{stamp}after kill\n");
    fs::write(&marker, &stamp).expect("marker");
    let warm = w.build(&cache);
    let tmp_left: Vec<_> = fs::read_dir(cache.join("tmp")).expect("tmp").collect();
    assert!(
        tmp_left.is_empty(),
        "work dirs left after a build: {tmp_left:?}"
    );
    for l in ["base", "mariadb", "rabbitmq", "memcached", "cluster"] {
        assert_eq!(
            warm.get(l).map(String::as_str),
            Some("reused"),
            "{l}: {warm:?}"
        );
    }
    assert_eq!(
        warm.get("firstboot").map(String::as_str),
        Some("built"),
        "{warm:?}"
    );
    let changed: serde_json::Value =
        serde_json::from_slice(&fs::read(w.out().join("manifest.json")).expect("manifest"))
            .expect("json");
    let rootfs2 = read_rootfs(&w.out().join("rootfs.tar.zst"));
    assert_eq!(
        rootfs2.get("etc/nib-test-marker").map(|e| e.head.clone()),
        Some(stamp.into_bytes())
    );

    // Drop what step 4 added to the shared cache (it is never needed again).
    let keep: Vec<String> = manifest["layers"]
        .as_array()
        .expect("l")
        .iter()
        .map(|l| l["key"].as_str().unwrap_or("").to_string())
        .collect();
    for l in changed["layers"].as_array().expect("layers") {
        let key = l["key"].as_str().expect("key");
        if keep.iter().any(|k| k == key) {
            continue;
        }
        let digest = l["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        let _ = fs::remove_file(cache.join("blobs/sha256").join(digest));
        let _ = fs::remove_file(cache.join("layers").join(format!("{key}.json")));
        let _ = fs::remove_dir_all(cache.join("trees").join(key));
        if l["name"] == "finalize" {
            let rk = format!("rootfs-{}-{key}", nib::seal::ROOTFS_FORMAT);
            if let Ok(t) = fs::read_to_string(cache.join("layers").join(format!("{rk}.json"))) {
                let v: serde_json::Value = serde_json::from_str(&t).expect("record");
                if let Some(d) = v["digest"].as_str() {
                    let _ = fs::remove_file(cache.join("blobs/sha256").join(d));
                }
            }
            let _ = fs::remove_file(cache.join("layers").join(format!("{rk}.json")));
        }
    }
}
