//! The pacemaker alert agent and the root service that tell RabbitMQ about
//! a peer corosync has lost (layers/rabbitmq/files/usr/lib/nib/; the CIB's
//! `<alerts>`; firstboot/doc/HA.md, "RabbitMQ"), and the broker unit's
//! wait for quorum before it boots, run as the image runs them,
//! with stand-ins for systemctl, corosync-quorumtool, rabbitmqctl and uname
//! that record how they were called.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nib_firstboot::pacemaker::render::RABBITMQ_ALERT_AGENT;

fn layer_file(abs: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../layers/rabbitmq/files")
        .join(abs.trim_start_matches('/'))
}

const HANDLER: &str = "/usr/lib/nib/rabbitmq-peer-lost";

/// corosync-quorumtool -s of controller01 with an arbiter, quorate, the
/// peer gone.
const QUORATE_ALONE: &str = "Quorum information
------------------
Nodes:            1
Node ID:          1
Quorate:          Yes

Membership information
----------------------
    Nodeid      Votes    Qdevice Name
         1          1    A,V,NMW controller01 (local)
         0          1            Qdevice
";

const INQUORATE_ALONE: &str = "Quorum information
------------------
Nodes:            1
Node ID:          1
Quorate:          No

Membership information
----------------------
    Nodeid      Votes    Qdevice Name
         1          1   A,NV,NMW controller01 (local)
         0          0            Qdevice
";

const BOTH_MEMBERS: &str = "Quorum information
------------------
Nodes:            2
Quorate:          Yes

Membership information
----------------------
    Nodeid      Votes Name
         1          1 controller01 (local)
         2          1 controller02
";

struct Stubs {
    dir: tempfile::TempDir,
}

impl Stubs {
    fn new() -> Stubs {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bin")).unwrap();
        fs::create_dir(dir.path().join("spool")).unwrap();
        let stubs = [
            ("uname", "echo controller01"),
            (
                "systemctl",
                "echo \"$*\" >>\"$STUB_DIR/systemctl.log\"; exit \"$STUB_ACTIVE_RC\"",
            ),
            (
                "corosync-quorumtool",
                "cat \"$STUB_DIR/quorum.txt\"; exit \"$(cat \"$STUB_DIR/quorum.rc\")\"",
            ),
            (
                "rabbitmqctl",
                "echo \"$*\" >>\"$STUB_DIR/rabbitmqctl.log\"; echo true",
            ),
        ];
        for (name, body) in stubs {
            let p = dir.path().join("bin").join(name);
            fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        Stubs { dir }
    }
    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }
    fn quorum(&self, text: &str, rc: i32) {
        fs::write(self.dir.path().join("quorum.txt"), text).unwrap();
        fs::write(self.dir.path().join("quorum.rc"), rc.to_string()).unwrap();
    }
    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
    fn command(&self, script: &str) -> Command {
        let mut c = Command::new(layer_file(script));
        c.env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display()),
            )
            .env("STUB_DIR", self.dir.path())
            .env("STUB_ACTIVE_RC", "0")
            .env("NIB_PEER_LOST_SPOOL", self.spool())
            .env("NIB_QUORUM_WAIT_S", "1");
        c
    }
    fn alert(&self, kind: &str, node: &str, desc: &str) {
        let out = self
            .command(RABBITMQ_ALERT_AGENT)
            .env("CRM_alert_kind", kind)
            .env("CRM_alert_node", node)
            .env("CRM_alert_desc", desc)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    fn spooled(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.spool())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
    fn handle(&self) -> String {
        let out = self.command(HANDLER).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn the_cib_names_the_agent_the_layer_installs_executable() {
    for f in [RABBITMQ_ALERT_AGENT, HANDLER] {
        let meta = fs::metadata(layer_file(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(
            meta.permissions().mode() & 0o111 == 0o111,
            "{f} not executable"
        );
    }
}

#[test]
fn only_a_lost_node_is_spooled() {
    let s = Stubs::new();
    s.alert("node", "controller02", "member");
    s.alert("resource", "controller02", "lost");
    s.alert("fencing", "controller02", "lost");
    // not a node name of ours: nothing, never a path outside the spool
    s.alert("node", "../etc", "lost");
    s.alert("node", "a b", "lost");
    assert!(s.spooled().is_empty(), "{:?}", s.spooled());
    s.alert("node", "controller02", "lost");
    assert_eq!(s.spooled(), ["controller02"]);
}

#[test]
fn the_quorate_side_disconnects_the_lost_broker() {
    let s = Stubs::new();
    s.quorum(QUORATE_ALONE, 0);
    s.alert("node", "controller02", "lost");
    let out = s.handle();
    assert_eq!(
        s.log("rabbitmqctl.log"),
        "-q eval erlang:disconnect_node('rabbit@controller02').\n",
        "{out}"
    );
    assert!(out.contains("disconnected rabbit@controller02"), "{out}");
    assert!(s.spooled().is_empty(), "the spool is emptied");
}

#[test]
fn the_side_without_quorum_leaves_its_broker_to_pacemaker() {
    let s = Stubs::new();
    s.quorum(INQUORATE_ALONE, 2);
    s.alert("node", "controller02", "lost");
    let out = s.handle();
    assert_eq!(s.log("rabbitmqctl.log"), "", "{out}");
    assert!(out.contains("no quorum"), "{out}");
    assert!(s.spooled().is_empty());
}

#[test]
fn a_peer_still_in_the_membership_is_left_alone() {
    let s = Stubs::new();
    s.quorum(BOTH_MEMBERS, 0);
    s.alert("node", "controller02", "lost");
    let out = s.handle();
    assert_eq!(s.log("rabbitmqctl.log"), "", "{out}");
    assert!(out.contains("member again"), "{out}");
}

#[test]
fn nothing_when_no_broker_runs_here_or_for_this_node() {
    let s = Stubs::new();
    s.quorum(QUORATE_ALONE, 0);
    s.alert("node", "controller01", "lost");
    s.handle();
    assert_eq!(s.log("rabbitmqctl.log"), "");
    s.alert("node", "controller02", "lost");
    let out = s
        .command(HANDLER)
        .env("STUB_ACTIVE_RC", "3")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(s.log("rabbitmqctl.log"), "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no broker runs here"));
}

const WAIT_QUORUM: &str = "/usr/lib/nib/rabbitmq-wait-quorum";

/// systemd starts the broker at boot, but a node outside a quorate
/// partition must not serve: the unit's ExecStartPre holds the boot until
/// corosync says quorate, however long that takes.
#[test]
fn the_broker_boots_only_once_the_node_is_quorate() {
    let dropin = fs::read_to_string(layer_file(
        "/etc/systemd/system/rabbitmq-server.service.d/nib-quorum.conf",
    ))
    .unwrap();
    assert!(
        dropin.contains(&format!("ExecStartPre=+{WAIT_QUORUM}")),
        "{dropin}"
    );
    let s = Stubs::new();
    s.quorum(INQUORATE_ALONE, 2);
    let mut child = s
        .command(WAIT_QUORUM)
        .env("NIB_QUORUM_PAUSE", "0.05")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it went on without quorum"
    );
    s.quorum(QUORATE_ALONE, 0);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("not in a quorate partition"), "{text}");
    assert!(text.contains("quorate; starting the broker"), "{text}");
}
