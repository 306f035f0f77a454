//! `nib-firstboot cluster` and `status` as a user runs them: the real
//! binary, a seed directory per test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A NoCloud seed directory: meta-data for `node`, the role data as user-data.
fn seed(node: &str, role_data: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("meta-data"),
        format!("instance-id: iid-cluster-cli\nlocal-hostname: {node}\n"),
    )
    .expect("meta-data");
    std::fs::write(dir.path().join("user-data"), role_data).expect("user-data");
    dir
}

fn example(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).expect("fixture")
}

fn nib_firstboot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nib-firstboot"))
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("run nib-firstboot")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn print_cib_masks_secrets_and_matches_the_golden_file() {
    for (fixture, golden) in [
        ("tests/fixtures/cluster.toml", "fencing-none.xml"),
        ("tests/fixtures/cib/cluster-ipmi.toml", "fencing-ipmi.xml"),
    ] {
        let role = example(fixture);
        let s = seed("controller01", &role);
        let seed_arg = s.path().to_string_lossy().into_owned();
        let out = nib_firstboot(&["cluster", "--print-cib", "--seed", &seed_arg]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        let expected = example(&format!("tests/fixtures/cib/{golden}"));
        assert!(
            stdout == expected,
            "--print-cib differs from {golden}:\n{stdout}"
        );
        // Neither the replication password nor a BMC password is printed.
        for secret in [
            "k2K8vAjIlfbokOvfnNLWYPQf",
            "bmc-pw-one-TEST",
            "bmc-pw-two-TEST",
        ] {
            assert!(!stdout.contains(secret) && !stderr.contains(secret));
        }
        let shown = nib_firstboot(&[
            "cluster",
            "--print-cib",
            "--show-secrets",
            "--seed",
            &seed_arg,
        ]);
        let (stdout, _) = text(&shown);
        assert!(shown.status.success());
        assert!(stdout.contains(r#"name="replication_passwd" value="k2K8vAjIlfbokOvfnNLWYPQf""#));
    }
}

#[test]
fn show_secrets_alone_is_a_usage_error() {
    let out = nib_firstboot(&["cluster", "--show-secrets"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

#[test]
fn missing_fencing_mode_exits_2_naming_the_key() {
    let role = example("tests/fixtures/cluster.toml").replace("mode = \"none\"\n", "");
    let s = seed("controller01", &role);
    let out = nib_firstboot(&[
        "cluster",
        "--print-cib",
        "--seed",
        &s.path().to_string_lossy(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("fencing.mode"), "{stderr}");
    assert!(!stderr.contains("k2K8vAjIlfbokOvfnNLWYPQf"));
}

#[test]
fn non_bootstrap_node_exits_0_at_once_saying_why() {
    let s = seed("controller02", &example("tests/fixtures/cluster.toml"));
    let start = Instant::now();
    // No corosync or pacemaker here: the command must not need them.
    let out = nib_firstboot(&["cluster", "--seed", &s.path().to_string_lossy()]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("nothing to do on controller02: the bootstrap node controller01 applies"),
        "{stderr}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn bootstrap_node_gives_up_after_the_timeout_without_forcing_quorum() {
    let s = seed("controller01", &example("tests/fixtures/cluster.toml"));
    // corosync is not running in the test's environment (and if it were,
    // not with this cluster's nodes): the wait must end with a clear error.
    let out = nib_firstboot(&[
        "cluster",
        "--seed",
        &s.path().to_string_lossy(),
        "--timeout",
        "1",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no quorum with all 2 nodes after 1 s"),
        "{stderr}"
    );
    assert!(stderr.contains("Quorum is never forced"), "{stderr}");
    assert!(stderr.contains("SPLIT BRAIN ACCEPTED"), "{stderr}");
}

#[test]
fn systemd_analyze_verifies_nib_cluster_service() {
    let root = tempfile::tempdir().expect("tmp");
    let unit_dir = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&unit_dir).expect("mkdir");
    std::fs::create_dir_all(root.path().join("usr/bin")).expect("mkdir");
    std::fs::copy(
        env!("CARGO_BIN_EXE_nib-firstboot"),
        root.path().join("usr/bin/nib-firstboot"),
    )
    .expect("copy binary");
    for unit in ["nib-cluster.service", "nib-firstboot.service"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("systemd")
                .join(unit),
            unit_dir.join(unit),
        )
        .expect("copy unit");
    }
    common::copy_system_units(root.path());
    // Stand-ins for the units it orders after and requires.
    for dep in ["pacemaker.service", "corosync.service"] {
        std::fs::write(
            unit_dir.join(dep),
            "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/usr/bin/nib-firstboot --version\n",
        )
        .expect("stand-in");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("/etc/systemd/system/nib-cluster.service")
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !stderr.contains("nib-cluster.service:"),
        "systemd-analyze warned:\n{stderr}"
    );
}
