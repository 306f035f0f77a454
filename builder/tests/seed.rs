//! `nib seed` and `nib cluster init` through the real binary, and the
//! seeds read back by the node's datasource: a vfat CIDATA image from
//! `nib seed` and an image from Debian's `cloud-localds`, each attached to
//! a read-only loop device (detached again by a guard).

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nib_firstboot::datasource;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn nib(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nib"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run nib")
}

/// `nib cluster init --out OUT` for the test pair (n1, n2) with `vip`,
/// then `extra` arguments.
fn cluster_init(dir: &Path, out: &str, vip: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "cluster",
        "init",
        "--out",
        out,
        "--node",
        "n1=198.18.0.11",
        "--node",
        "n2=198.18.0.12",
        "--vip",
        vip,
    ];
    args.extend_from_slice(extra);
    nib(&args, dir)
}

/// Loop devices are a machine-wide resource: one test at a time attaches.
static LOOP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Loop(String);
impl Loop {
    fn attach(img: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(img)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn seed_dir_and_vfat_are_deterministic_and_readable_by_the_datasource() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = fixtures().join("cluster.toml");
    let c = cluster.to_str().expect("utf8");
    for (i, _) in [0, 1].iter().enumerate() {
        let out = nib(
            &[
                "seed",
                c,
                "--node",
                "controller02",
                "--out",
                &format!("s{i}.img"),
            ],
            tmp.path(),
        );
        assert!(out.status.success(), "{}", text(&out));
        if i == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1100)); // a different clock second
        }
    }
    let a = fs::read(tmp.path().join("s0.img")).expect("img");
    assert_eq!(
        a,
        fs::read(tmp.path().join("s1.img")).expect("img"),
        "vfat seed bytes differ between runs"
    );
    let out = nib(
        &[
            "seed",
            c,
            "--node",
            "controller02",
            "--out",
            "d",
            "--format",
            "dir",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let from_dir = datasource::load_dir(&tmp.path().join("d")).expect("dir seed");
    assert_eq!(from_dir.local_hostname.as_deref(), Some("controller02"));
    assert!(from_dir.network_config.is_some());

    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lo = Loop::attach(&tmp.path().join("s0.img"));
    let dev = PathBuf::from(&lo.0);
    let blkid = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "LABEL"])
        .arg(&dev)
        .output()
        .expect("blkid");
    assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), "CIDATA");
    assert!(
        datasource::cidata_devices().contains(&dev),
        "{} not found by label",
        dev.display()
    );
    let from_vol = datasource::load_volume(&dev).expect("volume seed");
    assert_eq!(from_vol.instance_id, from_dir.instance_id);
    assert_eq!(from_vol.user_data, from_dir.user_data);
    assert_eq!(from_vol.network_config, from_dir.network_config);
    let mounts = fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(!mounts.contains(&lo.0), "seed volume still mounted");
}

#[test]
fn cloud_localds_seed_works() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = nib_firstboot::role::ClusterSpec::from_toml(
        &fs::read_to_string(fixtures().join("cluster.toml")).expect("read"),
        "c",
    )
    .expect("parse");
    let files =
        nib_firstboot::seed::seed_files(&spec, "controller01", Some("iid-localds")).expect("seed");
    fs::write(tmp.path().join("user-data"), &files.user_data).expect("w");
    fs::write(tmp.path().join("meta-data"), &files.meta_data).expect("w");
    fs::write(
        tmp.path().join("network-config"),
        files.network_config.as_deref().unwrap_or(""),
    )
    .expect("w");
    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for fs_kind in ["iso9660", "vfat"] {
        let img = tmp.path().join(format!("localds-{fs_kind}.img"));
        let out = Command::new("cloud-localds")
            .arg(format!("--filesystem={fs_kind}"))
            .arg(format!(
                "--network-config={}",
                tmp.path().join("network-config").display()
            ))
            .arg(&img)
            .arg(tmp.path().join("user-data"))
            .arg(tmp.path().join("meta-data"))
            .output()
            .expect("cloud-localds (package cloud-image-utils)");
        assert!(out.status.success(), "cloud-localds: {}", text(&out));
        let lo = Loop::attach(&img);
        let seed = datasource::load_volume(Path::new(&lo.0)).expect("read cloud-localds seed");
        assert_eq!(seed.instance_id, "iid-localds", "{fs_kind}");
        let (rd, role) = datasource::parse_seed(&seed).expect("valid role data");
        assert_eq!(role.name(), "controller01");
        assert_eq!(rd.spec, spec);
    }
}

#[test]
fn cluster_init_makes_fresh_valid_secrets_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = cluster_init(tmp.path(), "c.toml", "198.18.0.10/24", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let text1 = fs::read_to_string(tmp.path().join("c.toml")).expect("read");
    let spec = nib_firstboot::role::ClusterSpec::from_toml(&text1, "c.toml").expect("parses");
    // only the fencing choice is left to the operator
    let problems: Vec<_> = spec.problems("").into_iter().map(|p| p.path).collect();
    assert_eq!(problems, vec!["fencing.mode".to_string()]);
    for v in spec.secrets.values() {
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(v)
                && !String::from_utf8_lossy(&out.stderr).contains(v)
        );
    }
    let out = cluster_init(tmp.path(), "c.toml", "198.18.0.10/24", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(tmp.path().join("c.toml")).expect("read"),
        text1
    );
    // mode "none" without an arbiter: refused, naming file, key, reason
    // and the ways out; nothing written
    fs::write(
        tmp.path().join("c2.toml"),
        text1.replace("[fencing]\n", "[fencing]\nmode = \"none\"\n"),
    )
    .expect("w");
    let seed_n2 = || {
        nib(
            &[
                "seed", "c2.toml", "--node", "n2", "--out", "n2", "--format", "dir",
            ],
            tmp.path(),
        )
    };
    let out = seed_n2();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "c2.toml",
        "`fencing.mode`",
        "acknowledged writes will be lost",
        "--arbiter",
        "mode = \"ipmi\"",
        "accept_split_brain = true",
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    assert!(!tmp.path().join("n2").exists());
    // accepted explicitly: the seed is made, with a warning
    fs::write(
        tmp.path().join("c2.toml"),
        text1.replace(
            "[fencing]\n",
            "[fencing]\nmode = \"none\"\naccept_split_brain = true\n",
        ),
    )
    .expect("w");
    let out = seed_n2();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("SPLIT BRAIN ACCEPTED"),
        "{}",
        text(&out)
    );
    let other = tempfile::tempdir().expect("tmp");
    let out2 = cluster_init(other.path(), "c.toml", "198.18.0.10/24", &[]);
    assert!(out2.status.success());
    let spec2 = nib_firstboot::role::ClusterSpec::from_toml(
        &fs::read_to_string(other.path().join("c.toml")).expect("r"),
        "c",
    )
    .expect("p");
    assert_ne!(spec.secrets.erlang_cookie, spec2.secrets.erlang_cookie);
    assert_ne!(
        spec.secrets.corosync_authkey,
        spec2.secrets.corosync_authkey
    );
    // bad arguments: exit 2 naming the key
    let out = cluster_init(other.path(), "x.toml", "198.18.9.10/24", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`vip.address`"),
        "{}",
        text(&out)
    );
    assert!(!other.path().join("x.toml").exists());
}

/// Lines of base64 of the keys in `[secrets.arbiter]`.
fn arbiter_key_lines(spec: &nib_firstboot::role::ClusterSpec) -> Vec<String> {
    let a = spec.secrets.arbiter.as_ref().expect("[secrets.arbiter]");
    [&a.qnetd_key, &a.cluster_key]
        .iter()
        .flat_map(|k| k.expose().lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .collect()
}

#[test]
fn cluster_init_with_an_arbiter_makes_its_certificates_and_seed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = cluster_init(
        tmp.path(),
        "c.toml",
        "198.18.0.10/24",
        &["--arbiter", "q1=198.18.0.13"],
    );
    assert!(out.status.success(), "{}", text(&out));
    // with an arbiter, init chooses mode "none": the file is valid as written
    let body = fs::read_to_string(tmp.path().join("c.toml")).expect("read");
    let spec = nib_firstboot::role::ClusterSpec::from_toml(&body, "c.toml").expect("parses");
    assert_eq!(
        spec.fencing.mode,
        Some(nib_firstboot::role::FencingMode::None)
    );
    let (pair, arbiter) = spec.validate_whole().expect("the whole file is valid");
    assert!(!pair.split_brain_possible());
    assert_eq!(arbiter.expect("[arbiter]").name, "q1");
    let keys = arbiter_key_lines(&spec);
    assert!(!keys.is_empty());
    for l in &keys {
        assert!(!text(&out).contains(l.as_str()), "a key in nib's output");
    }
    let out = nib(
        &[
            "seed", "c.toml", "--node", "q1", "--out", "q1", "--format", "dir",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let seed = datasource::load_dir(&tmp.path().join("q1")).expect("seed");
    let (_, role) = datasource::parse_seed(&seed).expect("the arbiter's seed is valid");
    assert!(matches!(role, nib_firstboot::role::Role::Arbiter(_)));
    // a bad --arbiter is refused before anything is written
    let out = cluster_init(
        tmp.path(),
        "x.toml",
        "198.18.0.10/24",
        &["--arbiter", "n2=198.18.0.12"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`arbiter.name`") && err.contains("`arbiter.address`"),
        "{err}"
    );
    assert!(!tmp.path().join("x.toml").exists());
}

#[test]
fn arbiter_setup_makes_qnetds_database_in_a_root() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    for f in ["passwd", "group"] {
        fs::copy(
            fixtures().join("root/etc").join(f),
            root.join("etc").join(f),
        )
        .expect("copy");
    }
    let cluster = fixtures().join("cluster-arbiter.toml");
    let run = || {
        let out = nib(
            &[
                "arbiter-setup",
                &cluster.display().to_string(),
                "--root",
                &root.display().to_string(),
            ],
            tmp.path(),
        );
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let first = run();
    assert!(
        first.contains("/etc/corosync/qnetd/nssdb written"),
        "{first}"
    );
    let list = Command::new("certutil")
        .arg("-L")
        .arg("-d")
        .arg(format!(
            "sql:{}",
            root.join("etc/corosync/qnetd/nssdb").display()
        ))
        .output()
        .expect("certutil");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("QNet CA") && list.contains("QNetd Cert"),
        "{list}"
    );
    let dropin =
        fs::read_to_string(root.join("etc/systemd/system/corosync-qnetd.service.d/nib-tls.conf"))
            .expect("drop-in");
    assert!(dropin.contains("-s req -c on"), "{dropin}");
    assert!(run().contains("unchanged"), "a second run rebuilt it");
    let spec =
        nib_firstboot::role::ClusterSpec::from_toml(&fs::read_to_string(&cluster).expect("r"), "c")
            .expect("p");
    for l in arbiter_key_lines(&spec) {
        assert!(!first.contains(l.as_str()), "a key in nib's output");
    }
    // a file without [arbiter]: exit 2, naming the fix
    let out = nib(
        &[
            "arbiter-setup",
            &fixtures().join("cluster.toml").display().to_string(),
            "--root",
            &root.display().to_string(),
        ],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--arbiter"), "{}", text(&out));
}
