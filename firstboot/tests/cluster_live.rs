//! Two real corosync + pacemaker nodes, each in its own network, mount, PID
//! and UTS namespace on this machine (198.18.0.0/24, no default route),
//! configured with nib-firstboot's golden renderings (corosync.conf with
//! crypto, authkey, hosts, MariaDB config and init SQL):
//! - `apply_is_idempotent_on_a_real_pair`: applying twice leaves the
//!   configuration digest unchanged; fencing on/off adds and removes exactly
//!   nib's objects; a foreign resource survives.
//! - `mariadb_replicates_and_fails_over_on_a_real_pair`: real mariadbd under
//!   the mariadb agent: first primary on a fresh pair, replication, the
//!   binary's second run unchanged, `status`, failover after link down +
//!   kill, the old primary rejoining as replica. The CIB names
//!   ocf:nib:mariadb: each node's mount namespace sees the repo's
//!   firstboot/ocf/mariadb at /usr/lib/ocf/resource.d/nib/mariadb (see
//!   NODE_SCRIPT); the host's /usr/lib is not touched.
//!
//! `#[ignore]`d (root, ~60 s for both): `make test-cluster-live` runs them
//! (`cargo test -p nib-firstboot --test cluster_live -- --ignored`). Needs the Debian
//! packages corosync, pacemaker, pacemaker-cli-utils, resource-agents,
//! mariadb-server, mariadb-client.
//!
//! Teardown never depends on the test passing: each node's namespace init
//! is a child of `unshare --kill-child`; killing that PID (Drop) kills the
//! whole PID namespace, its tmpfs mounts vanish with its mount namespace,
//! and the network namespaces are deleted by name.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nib_firstboot::cluster::{self, quorum, Deadlines};
use nib_firstboot::pacemaker::state::ClusterState;
use nib_firstboot::pacemaker::{
    self, config_digest, CibParams, ClusterTools, FenceDevice, Fencing, Secret, SystemTools,
};
use nib_firstboot::role::ClusterSpec;

/// Runs inside the node's fresh namespaces: private state dirs on tmpfs,
/// the node's own /etc files (nib-firstboot's golden renderings for that
/// node) bind-mounted, then corosync and pacemakerd in the foreground.
const NODE_SCRIPT: &str = r#"#!/bin/sh
set -e
name=$1 dir=$2
hostname "$name"
mount --make-rprivate /
for d in /var/lib/pacemaker /var/lib/corosync /var/log/pacemaker /run; do
  mount -t tmpfs -o mode=0755 tmpfs "$d"
done
# resource agents' state and traces (HA_VARLIB), private per node
mount -t tmpfs -o mode=0755 tmpfs /var/lib/heartbeat
mkdir -p /var/lib/heartbeat/cores /var/lib/heartbeat/lrm
# libqb IPC rings of the daemons (some run as hacluster)
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mkdir -p /var/lib/pacemaker/cib /var/lib/pacemaker/pengine /var/lib/pacemaker/blackbox \
  /var/lib/pacemaker/cores /run/crm /run/resource-agents
chown -R hacluster:haclient /var/lib/pacemaker /var/log/pacemaker /run/crm
chmod 0750 /var/lib/pacemaker/*
if [ -f "$dir/initial-cib.xml" ]; then
  install -o hacluster -g haclient -m 0600 "$dir/initial-cib.xml" /var/lib/pacemaker/cib/cib.xml
fi
mount --bind "$dir/etc-corosync" /etc/corosync
mount --bind "$dir/hosts" /etc/hosts
if [ -d "$dir/etc-mysql" ]; then
  mount --bind "$dir/etc-mysql" /etc/mysql
  mount --bind "$dir/mysql-data" /var/lib/mysql
fi
# ocf:nib:mariadb, which the CIB names, is the repo's agent: resource.d is
# replaced in this mount namespace by a directory holding it (nib/) and
# bind mounts of the host's providers (heartbeat/, pacemaker/, ...), so the
# host's /usr/lib stays untouched and no path loops back.
# (A new directory at each start: a restarted node never reuses one.)
ocf=/usr/lib/ocf/resource.d
rd=$(mktemp -d "$dir/resource.d.XXXXXX")
chmod 0755 "$rd"
mkdir "$rd/nib"
install -m 0755 "$dir/../ocf-nib-mariadb" "$rd/nib/mariadb"
for p in "$ocf"/*; do
  [ -d "$p" ] && [ "${p##*/}" != nib ] || continue
  mkdir "$rd/${p##*/}"
  mount --bind "$p" "$rd/${p##*/}"
done
mount --rbind "$rd" "$ocf"
corosync -f >"$dir/corosync.log" 2>&1 &
# pacemakerd gives up when corosync does not answer yet (as systemd's
# ordering would guarantee on a node)
until corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1; do sleep 0.1; done
/usr/sbin/pacemakerd >"$dir/pacemakerd.log" 2>&1 &
wait
"#;

/// One running node: `unshare` (our child) and the namespace's init.
struct Running {
    unshare: Child,
    init_pid: u32,
}

impl Running {
    /// Kills the whole node: unshare --kill-child takes the PID namespace
    /// with it.
    fn kill(mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        let proc_dir = format!("/proc/{}", self.init_pid);
        let until = Instant::now() + Duration::from_secs(10);
        while Path::new(&proc_dir).exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct Pair {
    nodes: Vec<Option<Running>>,
    netns: Vec<String>,
    veth: String,
    dir: tempfile::TempDir,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut() {
            if let Some(r) = n.take() {
                r.kill();
            }
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
        // Only left in the root namespace when setup failed half-way.
        let _ = Command::new("ip")
            .args(["link", "delete", &self.veth])
            .stderr(Stdio::null())
            .status();
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

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn copy_mode(src: &Path, dst: &Path, mode: u32) {
    std::fs::copy(src, dst).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Pair {
    /// Two nodes' namespaces and files; `tag` keeps concurrent tests apart.
    fn new(tag: char, mariadb: bool) -> Pair {
        let id = std::process::id();
        let mut pair = Pair {
            nodes: vec![None, None],
            netns: Vec::new(),
            veth: format!("nc{id}{tag}a"),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for i in 1..=2 {
            let ns = format!("nibcl{id}{tag}{i}");
            sh(&["ip", "netns", "add", &ns]);
            pair.netns.push(ns);
        }
        let vb = format!("nc{id}{tag}b");
        sh(&[
            "ip", "link", "add", &pair.veth, "type", "veth", "peer", "name", &vb,
        ]);
        for (i, veth) in [pair.veth.clone(), vb].iter().enumerate() {
            let ns = &pair.netns[i];
            sh(&["ip", "link", "set", veth, "netns", ns]);
            sh(&["ip", "-n", ns, "link", "set", veth, "name", "eth0"]);
            let addr = format!("198.18.0.{}/24", 11 + i);
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        std::fs::write(pair.dir.path().join("node.sh"), NODE_SCRIPT).expect("script");
        // the agent the CIB names (ocf:nib:mariadb), as the image installs it
        copy_mode(
            &repo().join("firstboot/ocf/mariadb"),
            &pair.dir.path().join("ocf-nib-mariadb"),
            0o755,
        );
        for i in 0..2 {
            let name = format!("controller0{}", i + 1);
            let golden = repo().join("tests/fixtures/golden").join(&name);
            let d = pair.dir.path().join(&name);
            std::fs::create_dir_all(d.join("etc-corosync")).expect("dir");
            // nib-firstboot's own renderings for this node: knet with
            // crypto, the shared authkey, every peer in /etc/hosts.
            copy_mode(
                &golden.join("etc/corosync/corosync.conf"),
                &d.join("etc-corosync/corosync.conf"),
                0o644,
            );
            copy_mode(
                &golden.join("etc/corosync/authkey"),
                &d.join("etc-corosync/authkey"),
                0o400,
            );
            copy_mode(&golden.join("etc/hosts"), &d.join("hosts"), 0o644);
            if mariadb {
                pair.prepare_mariadb(&golden, &d);
            }
        }
        pair
    }

    /// The host's /etc/mysql plus the node's rendered config and init SQL,
    /// and a datadir made the way first boot makes it.
    fn prepare_mariadb(&self, golden: &Path, d: &Path) {
        let etc = d.join("etc-mysql");
        sh(&["cp", "-a", "/etc/mysql/.", &etc.to_string_lossy()]);
        copy_mode(
            &golden.join("etc/mysql/mariadb.conf.d/60-nib.cnf"),
            &etc.join("mariadb.conf.d/60-nib.cnf"),
            0o644,
        );
        copy_mode(
            &golden.join("etc/mysql/nib-init.sql"),
            &etc.join("nib-init.sql"),
            0o640,
        );
        sh(&[
            "chown",
            "root:mysql",
            &etc.join("nib-init.sql").to_string_lossy(),
        ]);
        std::fs::create_dir(d.join("mysql-data")).expect("dir");
        sh(&[
            "chown",
            "mysql:mysql",
            &d.join("mysql-data").to_string_lossy(),
        ]);
        let out = Command::new("mariadb-install-db")
            .args([
                "--user=mysql",
                &format!("--datadir={}", d.join("mysql-data").display()),
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ])
            .output()
            .expect("mariadb-install-db (Debian package mariadb-server)");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_node(&mut self, i: usize) {
        let name = format!("controller0{}", i + 1);
        let unshare = Command::new("ip")
            .args(["netns", "exec", &self.netns[i]])
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
            .arg(self.dir.path().join("node.sh"))
            .arg(&name)
            .arg(self.dir.path().join(&name))
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
        self.nodes[i] = Some(Running { unshare, init_pid });
    }

    fn stop_node(&mut self, i: usize) {
        if let Some(r) = self.nodes[i].take() {
            r.kill();
        }
    }

    fn prefix(&self, i: usize) -> Vec<String> {
        let pid = self.nodes[i].as_ref().expect("node running").init_pid;
        [
            "nsenter",
            "-t",
            &pid.to_string(),
            "-m",
            "-n",
            "-p",
            "-u",
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn tools(&self, i: usize, secrets: &[&str]) -> SystemTools {
        SystemTools::new(secrets).with_prefix(self.prefix(i))
    }

    /// `mysql -N -B -e SQL` on node `i` as root over its socket.
    fn sql(&self, i: usize, sql: &str) -> Result<String, String> {
        let p = self.prefix(i);
        // Vertical output (\G) keeps its field names only without -N.
        let names = if sql.ends_with("\\G") { "-B" } else { "-N" };
        let out = Command::new(&p[0])
            .args(&p[1..])
            .args([
                "mysql",
                names,
                "-B",
                "-S",
                "/run/mysqld/mysqld.sock",
                "-e",
                sql,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs a command inside node `i`; (success, stdout + stderr).
    fn run(&self, i: usize, args: &[&str]) -> (bool, String) {
        let p = self.prefix(i);
        let out = Command::new(&p[0])
            .args(&p[1..])
            .args(args)
            .output()
            .expect("nsenter");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn state(&self, i: usize) -> Option<ClusterState> {
        let xml = self.tools(i, &[]).crm_mon_xml().ok()?;
        ClusterState::parse(&xml).ok()
    }
}

/// Polls `check` every 200 ms until it returns Some or `secs` pass.
fn wait_for<T>(what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_nib-firstboot");

fn example() -> CibParams {
    let path = repo().join("tests/fixtures/cluster.toml");
    let text = std::fs::read_to_string(path).expect("fixture");
    let spec = ClusterSpec::from_toml(&text, "cluster.toml").expect("fixture");
    CibParams::new(&spec.validate().expect("valid fixture"))
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
                cipher: None,
            })
            .collect(),
    );
    p
}

fn digest(tools: &SystemTools) -> pacemaker::ConfigDigest {
    config_digest(&tools.cib_query().expect("cibadmin --query")).expect("digest")
}

#[test]
#[ignore = "needs root and the host's corosync+pacemaker (a real pair); run by: make test-cluster-live"]
fn apply_is_idempotent_on_a_real_pair() {
    let started = Instant::now();
    let mut pair = Pair::new('c', false);
    pair.start_node(0);
    pair.start_node(1);
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
    quorum::wait(&t1, &none, deadlines).expect("quorum with both nodes");
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
    t1.cib_apply(&pacemaker::CibOp::Modify {
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
        pair.netns,
        started.elapsed().as_secs_f64()
    );
}

fn slave_running(pair: &Pair, i: usize) -> bool {
    pair.sql(i, "SHOW SLAVE STATUS\\G")
        .map(|s| s.contains("Slave_IO_Running: Yes") && s.contains("Slave_SQL_Running: Yes"))
        .unwrap_or(false)
}

#[test]
#[ignore = "needs root and the host's corosync+pacemaker (a real pair); run by: make test-cluster-live"]
fn mariadb_replicates_and_fails_over_on_a_real_pair() {
    let mut pair = Pair::new('m', true);
    let params = example();
    // As first boot leaves a node when it writes cluster::initial_cib
    // (pacemaker starts with nib's CIB, dc-deadtime 500ms); without it
    // (NIB_LIVE_NO_INITIAL_CIB=1) the first run applies everything.
    let initial_cib = std::env::var_os("NIB_LIVE_NO_INITIAL_CIB").is_none();
    if initial_cib {
        let cib = pacemaker::initial_cib(&params).expect("initial CIB");
        for n in ["controller01", "controller02"] {
            std::fs::write(pair.dir.path().join(n).join("initial-cib.xml"), &cib).expect("cib");
        }
    }
    let secrets: Vec<String> = params.secrets().iter().map(|s| s.to_string()).collect();
    let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let deadlines = Deadlines {
        quorum: Duration::from_secs(90),
        primary: Duration::from_secs(120),
        ..Deadlines::default()
    };
    let started = Instant::now();
    pair.start_node(0);
    pair.start_node(1);
    let t1 = pair.tools(0, &secret_refs);
    let t2 = pair.tools(1, &secret_refs);

    // The non-bootstrap node leaves at once, saying why.
    let other = cluster::run(&params, "controller02", &t2, deadlines).expect("node 2");
    assert!(
        matches!(other, cluster::Outcome::NotBootstrap { .. }),
        "{other:?}"
    );

    // What nib-cluster.service runs on the bootstrap node.
    let outcome = cluster::run(&params, "controller01", &t1, deadlines).expect("cluster run");
    if initial_cib {
        // pacemaker started from nib's CIB: nothing left to apply.
        assert_eq!(outcome, cluster::Outcome::Unchanged);
    } else {
        assert!(
            matches!(outcome, cluster::Outcome::Applied(_)),
            "{outcome:?}"
        );
    }
    let ready = wait_for(
        "VIP and primary on controller01, replica on controller02",
        120,
        || {
            let st = pair.state(0)?;
            (st.primaries() == ["controller01"]
                && st.vip_nodes == ["controller01"]
                && st.replicas() == ["controller02"])
            .then_some(st)
        },
    );
    let until = Instant::now() + Duration::from_secs(60);
    while !slave_running(&pair, 1) {
        if Instant::now() > until {
            let log = pair.dir.path().join("controller02/mysql-data/mariadb.err");
            panic!(
                "replication on controller02 not running:\n{:?}\n{}\n--- crm_mon\n{:?}",
                pair.sql(1, "SHOW SLAVE STATUS\\G"),
                std::fs::read_to_string(log).unwrap_or_default(),
                pair.state(1)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "cluster ready (VIP + primary + replication) {:.1} s after both nodes started: {:?}",
        started.elapsed().as_secs_f64(),
        ready.vip_nodes
    );
    // The first transaction reached the replica: its GTID position is set,
    // so it can be promoted even if no client ever wrote.
    let gtid = wait_for("a GTID on the replica", 30, || {
        pair.sql(1, "SELECT @@gtid_current_pos")
            .ok()
            .filter(|p| p.contains('-'))
    });
    eprintln!("replica GTID position {gtid}");

    // A second run — the real binary inside the node, as
    // nib-cluster.service runs it at the next boot — writes nothing: same
    // configuration digest.
    let d1 = digest(&t1);
    let seed = pair.dir.path().join("seed-controller01");
    std::fs::create_dir(&seed).expect("seed dir");
    std::fs::write(
        seed.join("meta-data"),
        "instance-id: iid-live\nlocal-hostname: controller01\n",
    )
    .expect("meta-data");
    std::fs::write(
        seed.join("user-data"),
        std::fs::read_to_string(repo().join("tests/fixtures/cluster.toml")).expect("fixture"),
    )
    .expect("user-data");
    let seed_arg = seed.to_string_lossy().into_owned();
    let (ok, out) = pair.run(0, &[BIN, "cluster", "--seed", &seed_arg, "--timeout", "60"]);
    assert!(ok, "{out}");
    assert!(out.contains("CIB unchanged"), "{out}");
    assert!(
        !out.contains(&secrets[0]),
        "the replication password was printed"
    );
    assert_eq!(digest(&t1), d1, "second run changed the CIB");
    eprintln!("digest unchanged across runs: {d1:?}");

    // The status screen on the replica and on the primary.
    for i in [1, 0] {
        let (ok, screen) = pair.run(i, &[BIN, "status", "--seed", &seed_arg]);
        assert!(ok, "{screen}");
        eprintln!("--- nib-firstboot status on controller0{}\n{screen}", i + 1);
        assert!(
            screen.contains("VIP         198.18.0.10/24 on controller01"),
            "{screen}"
        );
        assert!(
            screen.contains("MariaDB     primary controller01, replica controller02"),
            "{screen}"
        );
        assert!(screen.contains("SPLIT BRAIN ACCEPTED"), "{screen}");
        assert!(!screen.contains("replication stopped"), "{screen}");
        assert!(!screen.contains(&secrets[0]));
    }

    // A row written on the primary appears on the replica.
    pair.sql(
        0,
        "CREATE DATABASE nibtest; CREATE TABLE nibtest.t (id INT PRIMARY KEY, v VARCHAR(32)) ENGINE=InnoDB; INSERT INTO nibtest.t VALUES (1, 'before failover')",
    )
    .expect("write on the primary");
    wait_for("row 1 on controller02", 30, || {
        (pair.sql(1, "SELECT v FROM nibtest.t WHERE id = 1").ok()? == "before failover")
            .then_some(())
    });

    let trace = std::env::var_os("NIB_CLUSTER_LIVE_TRACE").is_some();
    // Failover: the primary's link goes down and the node dies.
    let failed_at = Instant::now();
    sh(&["ip", "-n", &pair.netns[0], "link", "set", "eth0", "down"]);
    pair.stop_node(0);
    wait_for("VIP and primary on controller02", 60, || {
        let st = pair.state(1)?;
        (st.primaries() == ["controller02"] && st.vip_nodes == ["controller02"]).then_some(())
    });
    eprintln!(
        "failover: VIP and primary on controller02 {:.1} s after the kill",
        failed_at.elapsed().as_secs_f64()
    );
    // Where the failover time goes, from the survivor's pacemaker log.
    if trace {
        let p = pair.prefix(1);
        if let Ok(out) = Command::new(&p[0])
            .args(&p[1..])
            .args(["cat", "/var/log/pacemaker/pacemaker.log"])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| {
                [
                    "lost",
                    "Lost",
                    "promote",
                    "vip_start",
                    "Setting master-",
                    "election",
                    "Result of",
                ]
                .iter()
                .any(|k| l.contains(k))
            }) {
                eprintln!("  {line}");
            }
        }
    }
    wait_for("controller02 writable", 30, || {
        pair.sql(1, "INSERT INTO nibtest.t VALUES (2, 'after failover')")
            .ok()
    });
    assert_eq!(
        pair.sql(1, "SELECT COUNT(*) FROM nibtest.t")
            .expect("count"),
        "2"
    );

    // The old primary comes back (its stale VIP removed, as a real reboot
    // would) and follows the new one with no manual step.
    let _ = Command::new("ip")
        .args([
            "-n",
            &pair.netns[0],
            "addr",
            "del",
            "198.18.0.10/24",
            "dev",
            "eth0",
        ])
        .stderr(Stdio::null())
        .status();
    sh(&["ip", "-n", &pair.netns[0], "link", "set", "eth0", "up"]);
    pair.start_node(0);
    let back = cluster::run(
        &params,
        "controller01",
        &pair.tools(0, &secret_refs),
        deadlines,
    )
    .expect("nib-cluster on the returning node");
    assert_eq!(back, cluster::Outcome::Unchanged);
    wait_for("controller01 as replica of controller02", 120, || {
        let st = pair.state(1)?;
        (st.primaries() == ["controller02"] && st.replicas() == ["controller01"]).then_some(())
    });
    wait_for("row 2 on controller01", 60, || {
        (pair.sql(0, "SELECT v FROM nibtest.t WHERE id = 2").ok()? == "after failover")
            .then_some(())
    });
    assert!(
        slave_running(&pair, 0),
        "controller01 replication not running"
    );
    // The agent at work is ocf:nib:mariadb (the repo's, as the image
    // installs it): its unpromoted monitor gives the healthy replica
    // promotion score 50; the heartbeat agent sets none while the primary
    // has one.
    let score = wait_for("controller01's promotion score", 30, || {
        let (ok, out) = pair.run(
            1,
            &[
                "crm_attribute",
                "-N",
                "controller01",
                "-n",
                "master-mariadb",
                "-l",
                "reboot",
                "-G",
                "-q",
            ],
        );
        (ok && out.trim() == "50").then(|| out.trim().to_string())
    });
    eprintln!("rejoined replica's promotion score (ocf:nib:mariadb monitor): {score}");
    eprintln!(
        "old primary rejoined as replica; whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
