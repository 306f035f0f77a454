//! A real two-node corosync + pacemaker pair, each node in its own network,
//! mount, PID and UTS namespace on this machine (198.18.0.0/24, no default
//! route), and nib's CIB apply run against it: applying twice leaves the
//! configuration digest unchanged; switching fencing on and off adds and
//! removes exactly nib's objects.
//!
//! Opt-in (root, ~40 s): `NIB_CLUSTER_LIVE=1 cargo test -p nib-firstboot
//! --test cluster_live -- --nocapture`. Needs corosync and pacemaker
//! (Debian packages `corosync pacemaker pacemaker-cli-utils resource-agents`).
//!
//! Teardown never depends on the test passing: each node's namespace init
//! is a child of `unshare --kill-child`; killing that PID (Drop) kills the
//! whole PID namespace, its tmpfs mounts vanish with its mount namespace,
//! and the network namespaces are deleted by name.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nib_firstboot::cluster::{
    self, config_digest, quorum, CibParams, ClusterTools, Deadlines, FenceDevice, Fencing, Secret,
    SystemTools,
};
use nib_firstboot::role::ClusterSpec;

/// Runs inside the node's fresh namespaces: private state dirs on tmpfs,
/// then corosync and pacemakerd in the foreground.
const NODE_SCRIPT: &str = r#"#!/bin/sh
set -e
name=$1 dir=$2
hostname "$name"
mount --make-rprivate /
for d in /var/lib/pacemaker /var/lib/corosync /var/log/pacemaker /run; do
  mount -t tmpfs -o mode=0755 tmpfs "$d"
done
# libqb IPC rings of the daemons (some run as hacluster)
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mkdir -p /var/lib/pacemaker/cib /var/lib/pacemaker/pengine /var/lib/pacemaker/blackbox \
  /var/lib/pacemaker/cores /run/crm /run/resource-agents
chown -R hacluster:haclient /var/lib/pacemaker /var/log/pacemaker /run/crm
chmod 0750 /var/lib/pacemaker/*
corosync -f -c "$dir/corosync.conf" >"$dir/corosync.log" 2>&1 &
# pacemakerd gives up when corosync does not answer yet (as systemd's
# ordering would guarantee on a node)
until corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1; do sleep 0.1; done
/usr/sbin/pacemakerd >"$dir/pacemakerd.log" 2>&1 &
wait
"#;

const COROSYNC_CONF: &str = "totem {
  version: 2
  cluster_name: nib-live-test
  transport: knet
  # test only: an isolated namespace pair; nib renders crypto on
  crypto_cipher: none
  crypto_hash: none
  token: 1000
}
nodelist {
  node {
    name: controller01
    nodeid: 1
    ring0_addr: 198.18.0.11
  }
  node {
    name: controller02
    nodeid: 2
    ring0_addr: 198.18.0.12
  }
}
quorum {
  provider: corosync_votequorum
  two_node: 1
}
logging {
  to_stderr: yes
  to_syslog: no
  to_logfile: no
}
";

struct Node {
    netns: String,
    unshare: Child,
    init_pid: u32,
}

struct Pair {
    nodes: Vec<Node>,
    netns: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.unshare.kill();
            let _ = n.unshare.wait();
        }
        // The namespace init dies with unshare (--kill-child); wait for it
        // so nothing of the pair outlives the test.
        for n in &self.nodes {
            let proc_dir = format!("/proc/{}", n.init_pid);
            let until = Instant::now() + Duration::from_secs(10);
            while Path::new(&proc_dir).exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

fn sh(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(status.success(), "{args:?}: {status}");
}

fn child_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

impl Pair {
    fn start() -> Pair {
        let dir = tempfile::tempdir().expect("tempdir");
        let tag = std::process::id();
        let netns: Vec<String> = (1..=2).map(|i| format!("nibcl{tag}n{i}")).collect();
        let mut pair = Pair {
            nodes: Vec::new(),
            netns: Vec::new(),
            _dir: tempfile::tempdir().expect("tempdir"),
        };
        for ns in &netns {
            sh(&["ip", "netns", "add", ns]);
            pair.netns.push(ns.clone());
        }
        let (va, vb) = (format!("nc{tag}a"), format!("nc{tag}b"));
        sh(&[
            "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
        ]);
        for (i, (ns, veth)) in netns.iter().zip([&va, &vb]).enumerate() {
            sh(&["ip", "link", "set", veth, "netns", ns]);
            sh(&["ip", "-n", ns, "link", "set", veth, "name", "eth0"]);
            let addr = format!("198.18.0.{}/24", 11 + i);
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        let script = dir.path().join("node.sh");
        std::fs::write(&script, NODE_SCRIPT).expect("script");
        for (i, ns) in netns.iter().enumerate() {
            let name = format!("controller0{}", i + 1);
            let node_dir = dir.path().join(&name);
            std::fs::create_dir(&node_dir).expect("node dir");
            std::fs::write(node_dir.join("corosync.conf"), COROSYNC_CONF).expect("conf");
            let unshare = Command::new("ip")
                .args(["netns", "exec", ns])
                .args([
                    "unshare",
                    "--mount",
                    "--pid",
                    "--uts",
                    "--fork",
                    "--kill-child",
                    "--mount-proc",
                ])
                .arg("sh")
                .arg(&script)
                .arg(&name)
                .arg(&node_dir)
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn node");
            let upid = unshare.id();
            let until = Instant::now() + Duration::from_secs(10);
            let init_pid = loop {
                if let Some(p) = child_of(upid) {
                    break p;
                }
                assert!(Instant::now() < until, "node {name} did not start");
                std::thread::sleep(Duration::from_millis(20));
            };
            pair.nodes.push(Node {
                netns: ns.clone(),
                unshare,
                init_pid,
            });
        }
        pair._dir = dir;
        pair
    }

    fn tools(&self, i: usize, secrets: &[&str]) -> SystemTools {
        let pid = self.nodes[i].init_pid.to_string();
        SystemTools::new(secrets).with_prefix(
            ["nsenter", "-t", &pid, "-m", "-n", "-p", "-u", "--"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }
}

fn example() -> CibParams {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cluster.toml");
    let text = std::fs::read_to_string(path).expect("fixture");
    let spec = ClusterSpec::from_toml(&text, "cluster.toml").expect("fixture");
    CibParams::from_spec(&spec).expect("params")
}

fn with_ipmi(mut p: CibParams) -> CibParams {
    p.fencing = Fencing::Ipmi(
        p.nodes
            .iter()
            .map(|n| FenceDevice {
                node: n.name.clone(),
                address: format!("198.18.1.{}", n.id),
                username: "admin".into(),
                password: Secret::new(format!("bmc-secret-{}", n.id)),
                lanplus: true,
            })
            .collect(),
    );
    p
}

fn digest(tools: &SystemTools) -> cluster::ConfigDigest {
    config_digest(&tools.cib_query().expect("cibadmin --query")).expect("digest")
}

#[test]
fn apply_is_idempotent_on_a_real_pair() {
    if std::env::var_os("NIB_CLUSTER_LIVE").is_none() {
        eprintln!("skipped: set NIB_CLUSTER_LIVE=1 (root) to run a real corosync+pacemaker pair");
        return;
    }
    let started = Instant::now();
    let pair = Pair::start();
    let none = example();
    let ipmi = with_ipmi(example());
    let secrets: Vec<String> = ipmi.secrets().iter().map(|s| s.to_string()).collect();
    let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let t1 = pair.tools(0, &secret_refs);
    let t2 = pair.tools(1, &secret_refs);

    let deadlines = Deadlines {
        quorum: Duration::from_secs(90),
        ..Deadlines::default()
    };
    quorum::wait(&t1, &[1, 2], deadlines).expect("quorum with both nodes");
    eprintln!("quorate after {:.1} s", started.elapsed().as_secs_f64());

    // First apply writes; the second finds nothing to do and the digest
    // (epoch and configuration) stays put.
    let first = cluster::apply(&none, &t1).expect("first apply");
    assert!(!first.is_empty());
    eprintln!("first apply: {first:?}");
    let d1 = digest(&t1);
    let second = cluster::apply(&none, &t1).expect("second apply");
    assert!(second.is_empty(), "second apply changed {second:?}");
    let d2 = digest(&t1);
    assert_eq!(d1, d2, "configuration changed by the second apply");
    eprintln!("digest after 1st apply: {d1:?}\ndigest after 2nd apply: {d2:?}");

    // The other node's CIB carries the same configuration.
    let until = Instant::now() + Duration::from_secs(20);
    while digest(&t2) != d1 {
        assert!(Instant::now() < until, "controller02's CIB never caught up");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Applying from the other node (same role data) changes nothing either.
    assert!(cluster::apply(&none, &t2)
        .expect("apply on node 2")
        .is_empty());
    assert_eq!(digest(&t1), d1);

    // Fencing on: devices, their constraints and stonith-enabled appear.
    let on = cluster::apply(&ipmi, &t1).expect("fencing on");
    assert!(
        on.iter()
            .any(|c| c == "create primitive fence-controller01"),
        "{on:?}"
    );
    assert!(
        on.iter().any(|c| c.starts_with("set stonith-enabled")),
        "{on:?}"
    );
    assert!(cluster::apply(&ipmi, &t1).expect("again").is_empty());
    let cib = t1.cib_query().expect("query");
    assert!(cib.contains("fence-controller02"));

    // A hand-made resource nib never created must survive what follows.
    t1.cib_apply(&cluster::CibOp::Modify {
        xml: r#"<configuration><resources><primitive id="hand-made" class="ocf" provider="pacemaker" type="Dummy"/></resources></configuration>"#.into(),
    })
    .expect("hand-made resource");

    // Fencing off again: exactly nib's fencing objects go.
    let off = cluster::apply(&none, &t1).expect("fencing off");
    assert!(
        off.iter()
            .any(|c| c == "remove primitive fence-controller01"),
        "{off:?}"
    );
    assert!(
        off.iter().any(|c| c.starts_with("remove rsc_location")),
        "{off:?}"
    );
    let cib = t1.cib_query().expect("query");
    assert!(
        !cib.contains("fence-controller"),
        "fence objects left behind"
    );
    assert!(
        cib.contains(r#"id="hand-made""#),
        "a foreign resource was removed"
    );
    let d3 = digest(&t1);
    assert!(cluster::apply(&none, &t1).expect("final").is_empty());
    assert_eq!(digest(&t1), d3);

    // No secret in the CIB once fencing is off, other than the replication
    // password the agent needs.
    for s in &secrets[1..] {
        assert!(!cib.contains(s.as_str()));
    }
    eprintln!(
        "pair {:?} done in {:.1} s",
        pair.nodes
            .iter()
            .map(|n| n.netns.as_str())
            .collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
}
