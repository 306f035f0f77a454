//! rabbitmq-server.service's ExecStartPost (layers/rabbitmq/files/usr/lib/
//! nib/rabbitmq-vhosts-up, drop-in nib-vhosts.conf): a virtual host that is
//! not running on this node is restarted on it; one that stays stopped
//! fails the start. Run with stand-ins for rabbitmqctl (its 3.10.8 output,
//! a header line included) and uname.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../layers/rabbitmq/files/usr/lib/nib/rabbitmq-vhosts-up")
}

/// `states`: what each list_vhosts call shows for `/` on controller01 (the
/// last one repeats).
fn run(states: &[&str]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    for (i, st) in states.iter().enumerate() {
        fs::write(dir.path().join(format!("state{i}")), st).unwrap();
    }
    let stubs = [
        ("uname", "echo controller01".to_string()),
        (
            "rabbitmqctl",
            format!(
                r#"echo "$*" >>"$STUB_DIR/calls"
case "$*" in
*list_vhosts*)
    n=$(cat "$STUB_DIR/n" 2>/dev/null || echo 0)
    f="$STUB_DIR/state$n"; [ -e "$f" ] || f="$STUB_DIR/state{last}"
    echo $((n + 1)) >"$STUB_DIR/n"
    printf 'name\tcluster_state\n'
    printf '/\t[{{rabbit@controller01, %s}}, {{rabbit@controller02, running}}]\n' "$(cat "$f")"
    printf 'other\t[{{rabbit@controller01, running}}, {{rabbit@controller02, stopped}}]\n'
    ;;
esac
exit 0"#,
                last = states.len() - 1
            ),
        ),
    ];
    for (name, body) in stubs {
        let p = bin.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("sh")
        .arg(script())
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("STUB_DIR", dir.path())
        .env("NIB_VHOSTS_ROUNDS", "3")
        .env("NIB_VHOSTS_PAUSE", "0")
        .output()
        .unwrap();
    let calls = fs::read_to_string(dir.path().join("calls")).unwrap_or_default();
    (out, calls)
}

fn restarts(calls: &str) -> Vec<&str> {
    calls
        .lines()
        .filter(|l| l.contains("restart_vhost"))
        .collect()
}

#[test]
fn every_vhost_running_here_changes_nothing() {
    let (out, calls) = run(&["running"]);
    assert!(out.status.success(), "{out:?}");
    // the peer's stopped `other` is the peer's business
    assert!(restarts(&calls).is_empty(), "{calls}");
}

#[test]
fn a_vhost_stopped_here_is_restarted_here() {
    let (out, calls) = run(&["stopped", "running"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(restarts(&calls), ["-q restart_vhost -p /"], "{calls}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("virtual host '/' is not running on rabbit@controller01"),
        "{said}"
    );
}

#[test]
fn a_vhost_that_stays_stopped_fails_the_start() {
    let (out, calls) = run(&["stopped"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(restarts(&calls).len(), 3, "{calls}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("not running on rabbit@controller01 after 3 restarts: /"),
        "{said}"
    );
}
