//! ocf:nib:rabbitmq (layers/rabbitmq/files/usr/lib/ocf/resource.d/nib/
//! rabbitmq; firstboot/doc/HA.md, "RabbitMQ") run with resource-agents'
//! real ocf-shellfuncs and a stand-in systemctl whose unit state the test
//! sets and which records every call.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const OCF_SUCCESS: i32 = 0;
const OCF_ERR_GENERIC: i32 = 1;
const OCF_NOT_RUNNING: i32 = 7;

fn agent() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../layers/rabbitmq/files/usr/lib/ocf/resource.d/nib/rabbitmq")
}

struct Unit {
    dir: tempfile::TempDir,
}

impl Unit {
    /// `state`: what `systemctl is-active` prints; `after_stop`: the
    /// state a `systemctl stop` leaves.
    fn new(state: &str, after_stop: &str) -> Unit {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bin")).unwrap();
        fs::write(dir.path().join("state"), state).unwrap();
        fs::write(dir.path().join("after_stop"), after_stop).unwrap();
        let stub = dir.path().join("bin/systemctl");
        fs::write(
            &stub,
            "#!/bin/sh\necho \"$*\" >>\"$STUB_DIR/calls\"\ncase $1 in\n\
             is-active) s=$(cat \"$STUB_DIR/state\"); echo \"$s\"; [ \"$s\" = active ] ;;\n\
             stop) cp \"$STUB_DIR/after_stop\" \"$STUB_DIR/state\" ;;\n\
             *) exit 0 ;;\nesac\n",
        )
        .unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
        Unit { dir }
    }
    fn run(&self, action: &str) -> i32 {
        let out = Command::new(agent())
            .arg(action)
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.dir.path().join("bin").display()
                ),
            )
            .env("STUB_DIR", self.dir.path())
            .env("OCF_ROOT", "/usr/lib/ocf")
            .env("OCF_RESOURCE_INSTANCE", "rabbitmq:0")
            .output()
            .unwrap();
        out.status.code().unwrap()
    }
    fn calls(&self) -> String {
        fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default()
    }
}

#[test]
fn monitor_counts_a_starting_unit_as_running_and_a_failed_one_as_stopped() {
    for (state, rc) in [
        ("active", OCF_SUCCESS),
        ("activating", OCF_SUCCESS),
        ("deactivating", OCF_SUCCESS),
        ("inactive", OCF_NOT_RUNNING),
        ("failed", OCF_NOT_RUNNING),
    ] {
        assert_eq!(Unit::new(state, "inactive").run("monitor"), rc, "{state}");
    }
}

#[test]
fn start_queues_the_unit_without_waiting() {
    let u = Unit::new("failed", "inactive");
    assert_eq!(u.run("start"), OCF_SUCCESS);
    let calls = u.calls();
    assert!(
        calls.contains("reset-failed rabbitmq-server.service\n")
            && calls.contains("start --no-block rabbitmq-server.service\n"),
        "{calls}"
    );
    // already running: nothing started
    let u = Unit::new("active", "inactive");
    assert_eq!(u.run("start"), OCF_SUCCESS);
    assert!(!u.calls().contains("start --no-block"), "{}", u.calls());
}

#[test]
fn stop_waits_for_the_unit_and_fails_when_it_is_still_up() {
    let u = Unit::new("active", "inactive");
    assert_eq!(u.run("stop"), OCF_SUCCESS);
    assert!(u.calls().contains("stop rabbitmq-server.service\n"));
    let u = Unit::new("active", "active");
    assert_eq!(u.run("stop"), OCF_ERR_GENERIC);
}

#[test]
fn meta_data_is_xml_pacemaker_reads() {
    let out = Command::new(agent())
        .arg("meta-data")
        .env("OCF_ROOT", "/usr/lib/ocf")
        .output()
        .unwrap();
    assert!(out.status.success());
    let xml = String::from_utf8(out.stdout).unwrap();
    let doc = roxmltree::Document::parse_with_options(
        &xml,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap();
    let actions: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("action"))
        .filter_map(|n| n.attribute("name"))
        .collect();
    for a in ["start", "stop", "monitor", "meta-data"] {
        assert!(actions.contains(&a), "{actions:?}");
    }
}
