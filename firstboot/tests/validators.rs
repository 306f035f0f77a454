//! The real tools accept the rendered files (the golden files, which the
//! golden test proves equal to what `apply` renders): systemd-analyze on the
//! unit, my_print_defaults and a real mariadbd start on the MariaDB config
//! and init SQL, corosync's own parser on corosync.conf, and RabbitMQ's
//! cuttlefish schema on rabbitmq.conf; with a quorum arbiter, corosync -t
//! and a real corosync + corosync-qdevice + corosync-qnetd trio. The tools come from the Makefile's
//! APT_TEST; namespaces keep the node addresses and bind mounts private.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn golden(node: &str) -> PathBuf {
    fixtures().join("golden").join(node)
}

fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: cannot run ({e}); install the Makefile's APT_TEST packages")
    });
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} rejected the rendered file:\n{all}"
    );
    all
}

const NODES: [(&str, &str); 2] = [
    ("controller01", "198.18.0.11"),
    ("controller02", "198.18.0.12"),
];

#[test]
fn systemd_analyze_verifies_the_unit() {
    let root = tempfile::tempdir().expect("tmp");
    let unit_dir = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&unit_dir).expect("mkdir");
    std::fs::create_dir_all(root.path().join("usr/bin")).expect("mkdir");
    std::fs::copy(bin(), root.path().join("usr/bin/nib-firstboot")).expect("copy binary");
    // nib-firstboot.service and the two units it leaves its slow steps to
    let units = [
        "nib-firstboot.service",
        "nib-hostkeys.service",
        "nib-datadir.service",
    ];
    for u in units {
        let unit = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(u);
        std::fs::copy(&unit, unit_dir.join(u)).expect("copy unit");
    }
    common::copy_system_units(root.path());
    // stand-ins for the units they order themselves before
    for dep in ["ssh.service", "pacemaker.service", "mariadb.service"] {
        std::fs::write(
            unit_dir.join(dep),
            "[Unit]\nDescription=stand-in\nDefaultDependencies=no\n[Service]\nExecStart=/usr/bin/nib-firstboot --version\n",
        )
        .expect("stand-in");
    }
    // the memcached drop-in is checked as part of a unit that uses it
    let memcached = unit_dir.join("memcached.service");
    std::fs::write(
        &memcached,
        "[Unit]\nDescription=stand-in\nDefaultDependencies=no\n[Service]\nExecStart=/usr/bin/nib-firstboot --version\n",
    )
    .expect("w");
    std::fs::create_dir_all(unit_dir.join("memcached.service.d")).expect("mkdir");
    std::fs::copy(
        golden("controller01").join("etc/systemd/system/memcached.service.d/nib-limits.conf"),
        unit_dir.join("memcached.service.d/nib-limits.conf"),
    )
    .expect("copy drop-in");
    let out = run(
        "systemd-analyze verify",
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .args([
                "/etc/systemd/system/nib-firstboot.service",
                "/etc/systemd/system/nib-hostkeys.service",
                "/etc/systemd/system/nib-datadir.service",
                "/etc/systemd/system/memcached.service",
            ]),
    );
    for u in units {
        assert!(
            !out.contains(&format!("{u}:")),
            "systemd-analyze warned about {u}:\n{out}"
        );
    }
}

#[test]
fn my_print_defaults_reads_the_mariadb_config() {
    for (node, _addr) in NODES {
        let cnf = golden(node).join("etc/mysql/mariadb.conf.d/60-nib.cnf");
        let out = run(
            "my_print_defaults",
            Command::new("my_print_defaults")
                .arg(format!("--defaults-file={}", cnf.display()))
                .arg("mariadb"),
        );
        let id = if node == "controller01" { 1 } else { 2 };
        for want in [
            format!("--server_id={id}"),
            "--bind_address=0.0.0.0".into(),
            "--log_bin=mysql-bin".into(),
            "--sync_binlog=1".into(),
            "--innodb_flush_log_at_trx_commit=1".into(),
            "--init_file=/etc/mysql/nib-init.sql".into(),
        ] {
            assert!(
                out.lines().any(|l| l == want),
                "{node}: {want} not in\n{out}"
            );
        }
    }
}

#[test]
fn mariadbd_starts_with_the_config_and_init_sql() {
    let (_, pwfile) = replication_password_file();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/mariadb-start.sh");
    let (node, addr) = NODES[1];
    let out = run(
        "mariadbd",
        Command::new("unshare")
            .args(["-n", "-m"])
            .arg(&script)
            .arg(golden(node))
            .arg(addr)
            .arg(pwfile.path()),
    );
    eprintln!("{out}");
}

/// `corosync -t` on the corosync.conf and authkey in `dir`, in a private
/// network and mount namespace where `addr` (the node's) is on an
/// interface, as corosync requires.
fn corosync_t(dir: &Path, addr: &str) -> String {
    run(
        "corosync -t",
        Command::new("unshare").args(["-n", "-m", "sh", "-c"]).arg(format!(
            "ip link set lo up && ip addr add {addr}/32 dev lo && mount --bind '{}' /etc/corosync && corosync -t",
            dir.display()
        )),
    )
}

#[test]
fn corosync_parses_corosync_conf() {
    for (node, addr) in NODES {
        let out = corosync_t(&golden(node).join("etc/corosync"), addr);
        assert!(out.contains("exiting normally"), "{node}: {out}");
    }
}

#[test]
fn corosync_parses_corosync_conf_with_the_quorum_device() {
    for (node, addr) in NODES {
        let dir = golden(&format!("with-arbiter/{node}")).join("etc/corosync");
        let conf = std::fs::read_to_string(dir.join("corosync.conf")).expect("golden");
        assert!(
            !conf.lines().any(|l| l.trim().starts_with("two_node:")),
            "{conf}"
        );
        let out = corosync_t(&dir, addr);
        assert!(out.contains("exiting normally"), "{node}: {out}");
    }
}

/// The rendered quorum device works with the real daemons: corosync and
/// corosync-qdevice with controller01's renderings and NSS database,
/// corosync-qnetd with the arbiter's; the one node running is quorate
/// only with qnetd's vote, which it gets over TLS with the certificates
/// `nib cluster init` made. The VIP heuristic runs and fails or passes
/// with the VIP, which qnetd records (the tie-break of a 1:1 split).
#[test]
fn qdevice_gets_qnetds_vote_over_tls() {
    let spec = arbiter_example();
    let roots: Vec<_> = ["controller01", "arbiter01"]
        .iter()
        .map(|n| {
            let root = fake_root();
            let seed = seed_of(&spec, n, Some("iid-live"));
            let out = apply(root.path(), seed.path(), &["--no-host-keys"]);
            assert!(out.status.success(), "{}", text(&out));
            root
        })
        .collect();
    let work = tempfile::tempdir().expect("tmp");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/qdevice-live.sh");
    let out = run(
        "corosync + corosync-qdevice + corosync-qnetd",
        Command::new("unshare")
            .args(["-n", "-m", "-p", "-f", "--kill-child", "--mount-proc"])
            .arg(&script)
            .arg(roots[0].path())
            .arg(roots[1].path())
            .arg(work.path())
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../layers/cluster/files/usr/lib/nib/holds-address"),
            ),
    );
    eprintln!("{out}");
    assert!(out.contains("Qdevice"), "no qdevice vote listed:\n{out}");
    assert!(
        out.contains("openstack-ctl"),
        "qnetd does not list the cluster:\n{out}"
    );
    // qdevice sent the cluster certificate, qnetd verified it against the CA
    assert!(
        out.contains("Yes (client certificate sent)")
            && out.contains("Yes (client certificate verified)"),
        "not over TLS with the client certificate:\n{out}"
    );
    assert!(out.contains("Flags:            Quorate Qdevice"), "{out}");
    // The VIP heuristic ran (exec_vip, as rendered) and qnetd has its
    // result: failed without the VIP, and the lone node was still given
    // the vote; passed with it.
    let (without, with) = out
        .split_once("== with the VIP")
        .unwrap_or_else(|| panic!("the second qdevice run did not get quorum:\n{out}"));
    assert!(
        without.contains("== without the VIP: quorate")
            && without.contains("membership: Fail, connect: Fail")
            && without.contains("Heuristics:\t\tFail (membership: Fail"),
        "heuristics did not fail without the VIP:\n{without}"
    );
    assert!(
        with.contains("membership: Pass, connect: Pass")
            && with.contains("Heuristics:\t\tPass (membership: Pass"),
        "heuristics did not pass with the VIP:\n{with}"
    );
}

#[test]
fn rabbitmq_schema_accepts_rabbitmq_conf() {
    let base = std::fs::read_dir("/usr/lib/rabbitmq/lib")
        .expect("rabbitmq-server installed (APT_TEST)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rabbitmq_server-"))
        })
        .expect("rabbitmq_server-* dir");
    let plugins = base.join("plugins");
    let p = plugins.display();
    // The same steps rabbit's prelaunch runs: load every schema, parse the
    // file, map it (which runs the validators, e.g. load_definitions exists).
    let eval = format!(
        r#"S = cuttlefish_schema:files(filelib:wildcard("{p}/*/priv/schema/*.schema") ++ filelib:wildcard("{p}/*/priv/*.schema")),
C = cuttlefish_conf:files(["/etc/rabbitmq/rabbitmq.conf"]),
case C of {{errorlist,E}} -> io:format("conf errors: ~p~n",[E]), halt(1); _ -> ok end,
case cuttlefish_generator:map(S, C) of {{error,Ph,Er}} -> io:format("~p: ~p~n",[Ph,Er]), halt(1); Cfg -> io:format("~p~n~p~n",[proplists:get_value(rabbit, Cfg), proplists:get_value(kernel, Cfg)]), halt(0) end."#
    );
    for (node, addr) in NODES {
        let dir = golden(node).join("etc/rabbitmq");
        let script = format!("mount --bind '{}' /etc/rabbitmq && exec erl -noshell -noinput -pa {p}/*/ebin -eval \"$NIB_EVAL\"", dir.display());
        let out = run(
            "rabbitmq cuttlefish",
            Command::new("unshare")
                .args(["-m", "sh", "-c"])
                .arg(script)
                .env("NIB_EVAL", &eval),
        );
        assert!(
            out.contains("{cluster_partition_handling,autoheal}"),
            "{node}: {out}"
        );
        assert!(
            out.contains(&format!("{{tcp_listeners,[{{\"{addr}\",5672}}]}}")),
            "{node}: {out}"
        );
        assert!(
            out.contains("rabbit@controller01") && out.contains("rabbit@controller02"),
            "{node}: {out}"
        );
        assert!(
            out.contains("{load_definitions,\"/etc/rabbitmq/definitions.json\"}"),
            "{node}: {out}"
        );
        // a dead peer within 10 s (net_ticktime +25 %), not 75 s
        assert!(out.contains("{net_ticktime,8}"), "{node}: {out}");
        // the CLI ticks alike
        let env = std::fs::read_to_string(dir.join("rabbitmq-env.conf")).expect("read");
        assert!(
            env.lines()
                .any(|l| l == "CTL_ERL_ARGS=\"-kernel net_ticktime 8\""),
            "{node}: {env}"
        );
    }
    // definitions.json is valid JSON with the policy rabbit expects
    let defs: serde_json::Value = serde_json::from_slice(
        &std::fs::read(golden("controller01").join("etc/rabbitmq/definitions.json")).expect("read"),
    )
    .expect("json");
    let policy = &defs["policies"][0]["definition"];
    assert_eq!(policy["ha-mode"], "all");
    assert_eq!(policy["ha-sync-mode"], "automatic");
    // never promote a mirror that lacks confirmed messages
    assert_eq!(policy["ha-promote-on-failure"], "when-synced");
    assert_eq!(policy["ha-promote-on-shutdown"], "when-synced");
}

/// A cut peer is declared down within net_ticktime + 25 % (RabbitMQ's
/// bound; 10 s with the rendered 8): the fallback when no pacemaker alert
/// tells the broker first. Two real Erlang VMs, the link between them cut
/// at random points of the tick cycle (measured here: 6.7-8.1 s).
#[test]
fn erlang_declares_a_cut_peer_down_within_net_ticktime() {
    let conf = std::fs::read_to_string(golden("controller01").join("etc/rabbitmq/rabbitmq.conf"))
        .expect("read");
    let t: u64 = conf
        .lines()
        .find_map(|l| l.strip_prefix("net_ticktime = "))
        .expect("net_ticktime in rabbitmq.conf")
        .trim()
        .parse()
        .expect("a number");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/net-ticktime.sh");
    for _ in 0..2 {
        let out = run(
            "two Erlang nodes, link cut",
            Command::new(&script).arg(t.to_string()),
        );
        let ms: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("nodedown after "))
            .and_then(|l| l.strip_suffix(" ms"))
            .unwrap_or_else(|| panic!("no nodedown:\n{out}"))
            .parse()
            .expect("ms");
        eprintln!("net_ticktime {t} s: nodedown after {ms} ms");
        assert!(ms <= t * 1250, "{ms} ms > 1.25 x {t} s");
        assert!(
            ms >= t * 500,
            "{ms} ms: the cut did not take (below 0.5 x {t} s)"
        );
    }
}
