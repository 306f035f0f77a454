//! The suite's steps, shared by the test and the bench: boot, wait for the
//! cluster, check every service, fail over with a writer running, rejoin.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::checks;
use crate::cluster::{NODES, PREFIX, VIP};
use crate::node::Node;
use crate::pair::Pair;
use crate::wait::until;
use crate::writer::{self, SqlClient, Writer};

const POLL: Duration = Duration::from_millis(250);

fn names() -> Vec<&'static str> {
    NODES.iter().map(|(n, _)| *n).collect()
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

/// Boot both nodes; wait for multi-user on each and for each to reach the
/// other over 198.18.0.x (sshd's port).
pub fn boot_and_reach(pair: &mut Pair) -> Result<()> {
    pair.boot()?;
    let seeded = pair.cluster_toml.is_some();
    for n in &pair.nodes {
        let state = if seeded {
            until(
                &format!("nib-firstboot.service to run on {}", n.name),
                Duration::from_secs(180),
                Duration::from_millis(500),
                || checks::firstboot_done(n),
            )
            .map(|s| format!("nib-firstboot.service {s}"))?
        } else {
            until(
                &format!("{} to finish booting", n.name),
                Duration::from_secs(180),
                Duration::from_millis(500),
                || checks::booted(n),
            )
            .map(|s| format!("systemd {s}"))?
        };
        crate::log(&format!("{}: {state}", n.name));
        checks::no_default_route(n)?;
    }
    if let Some(a) = &pair.arbiter {
        if seeded {
            until(
                &format!("first boot and corosync-qnetd on arbiter {}", a.name),
                Duration::from_secs(180),
                Duration::from_millis(500),
                || checks::arbiter_up(a),
            )?;
            crate::log(&format!(
                "{}: nib-firstboot, nib-hostkeys, corosync-qnetd active",
                a.name
            ));
        } else {
            until(
                &format!("{} to finish booting", a.name),
                Duration::from_secs(180),
                Duration::from_millis(500),
                || checks::booted(a),
            )?;
        }
        checks::no_default_route(a)?;
        for n in &pair.nodes {
            let port = if seeded { 5403 } else { 22 };
            until(
                &format!("{} to reach {} ({}:{port})", n.name, a.name, a.address),
                Duration::from_secs(60),
                Duration::from_millis(500),
                || checks::tcp_reachable(n, &a.address, port),
            )?;
        }
        crate::log(&format!("both nodes reach arbiter {}", a.address));
    }
    for n in &pair.nodes {
        let peer = pair.peer(&n.name)?;
        until(
            &format!("{} to reach {} ({}:22)", n.name, peer.name, peer.address),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || checks::tcp_reachable(n, &peer.address, 22),
        )?;
        crate::log(&format!(
            "{} reaches {} at {}:22",
            n.name, peer.name, peer.address
        ));
    }
    Ok(())
}

/// How long to wait for the cluster to form (`NIB_E2E_READY_TIMEOUT`
/// seconds, default 240).
pub fn ready_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("NIB_E2E_READY_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(240),
    )
}

/// When each part of "cluster ready" was first seen, in seconds after the
/// nodes were started.
#[derive(Debug, Clone)]
pub struct Ready {
    pub primary: String,
    pub replica: String,
    pub quorate: f64,
    /// With the arbiter: both nodes count the Qdevice vote (3 of 3) and
    /// qnetd lists both; `None` without the arbiter.
    pub qdevice: Option<f64>,
    pub rabbit: f64,
    pub vip: f64,
    pub replication: f64,
    /// All of VIP + replication + RabbitMQ of two.
    pub ready: f64,
}

/// Poll until the VIP is on one node, the other replicates from it and
/// RabbitMQ runs both nodes. Cheap probes run every round; RabbitMQ's CLI
/// (an Erlang VM per call) only once both brokers answer AMQP, and only
/// until it has answered once.
pub fn wait_cluster_ready(pair: &Pair, timeout: Duration) -> Result<Ready> {
    let start = pair.started.context("pair not booted")?;
    let both = names();
    let (mut quorate, mut rabbit, mut vip, mut repl) = (None, None, None, None);
    let mut qdevice = None;
    let cluster_name = pair.cluster_name.clone().unwrap_or_default();
    let mut last = String::from("nothing yet");
    let mut roles = None;
    loop {
        let now = start.elapsed();
        match &pair.arbiter {
            None => {
                if quorate.is_none() && checks::corosync_quorate(&pair.nodes[0], 2).is_ok() {
                    quorate = Some(now);
                }
            }
            Some(a) => {
                if quorate.is_none() && checks::corosync_quorate_now(&pair.nodes[0]) == Some(true) {
                    quorate = Some(now);
                }
                if qdevice.is_none() {
                    let both = pair
                        .nodes
                        .iter()
                        .try_for_each(|n| checks::corosync_quorate_qdevice(n).map(|_| ()))
                        .and_then(|()| checks::qnetd_lists(a, &cluster_name, &[1, 2]).map(|_| ()));
                    match both {
                        Ok(()) => qdevice = Some(start.elapsed()),
                        Err(e) => last = format!("{e:#}"),
                    }
                }
            }
        }
        match pair.vip_holders() {
            Ok(h) if h.len() == 1 => {
                vip.get_or_insert(now);
                let primary = pair.node(&h[0])?;
                let replica = pair.peer(&h[0])?;
                match checks::replicating(replica, primary) {
                    Ok(()) => {
                        repl.get_or_insert(start.elapsed());
                        roles = Some((primary.name.clone(), replica.name.clone()));
                    }
                    Err(e) => last = format!("{e:#}"),
                }
            }
            Ok(h) => last = format!("VIP {VIP} on {h:?}"),
            Err(e) => last = format!("{e:#}"),
        }
        // RabbitMQ's CLI is an Erlang VM per call (about a CPU-second
        // here): polled back to back it would slow the brokers it waits
        // for. A broker opens its AMQP listener only once it has joined
        // (or formed) its cluster, so the CLI runs only when both answer
        // AMQP; its answer still decides. The time counted is the poll's
        // that found both listeners (when clients could use the pair),
        // not the end of the CLI's own VM boot that then confirmed it:
        // a broker that formed a cluster of its own never joins later,
        // so a confirmed pair was one when both listeners answered.
        if rabbit.is_none() {
            let closed: Vec<&str> = pair
                .nodes
                .iter()
                .filter(|n| {
                    format!("{}:5672", n.address).parse().map_or(true, |a| {
                        checks::amqp_serves_within(&pair.client.path(), a, POLL).is_err()
                    })
                })
                .map(|n| n.name.as_str())
                .collect();
            let polled = start.elapsed();
            if !closed.is_empty() {
                last = format!("no AMQP listener yet on {closed:?}");
            } else {
                match checks::rabbit_running(&pair.nodes[0], &both) {
                    Ok(_) => rabbit = Some(polled),
                    Err(e) => last = format!("{e:#}"),
                }
            }
        }
        let qdevice_done = pair.arbiter.is_none() || qdevice.is_some();
        if let (Some(q), Some(r), Some(v), Some(p), Some((primary, replica)), true) =
            (quorate, rabbit, vip, repl, roles.clone(), qdevice_done)
        {
            let ready = Ready {
                primary,
                replica,
                quorate: secs(q),
                qdevice: qdevice.map(secs),
                rabbit: secs(r),
                vip: secs(v),
                replication: secs(p),
                ready: secs(r.max(p).max(v).max(qdevice.unwrap_or_default())),
            };
            crate::log(&format!(
                "cluster ready {:.2} s after start (corosync quorate {:.2} s, qdevice vote on both + qnetd lists both {}, RabbitMQ of two {:.2} s, VIP {:.2} s, replication {:.2} s); primary {}, replica {}",
                ready.ready, ready.quorate,
                ready.qdevice.map_or("- (no arbiter)".to_string(), |s| format!("{s:.2} s")),
                ready.rabbit, ready.vip, ready.replication, ready.primary, ready.replica
            ));
            return Ok(ready);
        }
        if start.elapsed() >= timeout {
            bail!(
                "cluster not ready {:.0} s after start (quorate: {quorate:?}, qdevice: {qdevice:?}, RabbitMQ of two: {rabbit:?}, VIP: {vip:?}, replication: {repl:?}); last seen: {last}",
                timeout.as_secs_f64()
            );
        }
        thread::sleep(POLL);
    }
}

/// Row ids in the suite's table on `n` (root over the local socket).
fn ids_on(n: &Node) -> Result<BTreeSet<u64>> {
    let out = checks::sql(n, &format!("SELECT id FROM {}.acks", writer::DB))?;
    out.lines()
        .map(|l| {
            l.trim()
                .parse::<u64>()
                .with_context(|| format!("id `{l}` from {}", n.name))
        })
        .collect()
}

/// Create the suite's SQL user and table on the primary and return a
/// client in the client namespace that reaches MariaDB through the VIP.
pub fn sql_client(pair: &Pair, ready: &Ready) -> Result<SqlClient> {
    let primary = pair.node(&ready.primary)?;
    let password = writer::random_password()?;
    checks::sql(primary, &writer::setup_sql(&password))?;
    SqlClient::new(&pair.client.path(), pair.dir(), VIP, &password)
}

/// The per-node services that do not depend on pacemaker's resources:
/// first boot, corosync, RabbitMQ, memcached.
pub fn check_nodes(pair: &Pair) -> Result<()> {
    let both = names();
    let t = Duration::from_secs(90);
    for n in &pair.nodes {
        checks::firstboot_succeeded(n)?;
        crate::log(&format!(
            "{}: nib-firstboot, nib-hostkeys, nib-datadir services active, result success",
            n.name
        ));
    }
    for n in &pair.nodes {
        let q = if pair.arbiter.is_some() {
            until(
                &format!(
                    "corosync quorate with 2 nodes and the Qdevice vote on {}",
                    n.name
                ),
                t,
                POLL,
                || checks::corosync_quorate_qdevice(n),
            )?
        } else {
            until(
                &format!("corosync quorate with 2 nodes on {}", n.name),
                t,
                POLL,
                || checks::corosync_quorate(n, 2),
            )?
        };
        crate::log(&format!("{}: corosync {q:?}", n.name));
    }
    if let Some(a) = &pair.arbiter {
        let name = pair.cluster_name.clone().unwrap_or_default();
        let v = until(
            &format!("qnetd on {} to list {name}", a.name),
            t,
            POLL,
            || checks::qnetd_lists(a, &name, &[1, 2]),
        )?;
        crate::log(&format!(
            "{}: corosync-qnetd-tool -l lists cluster {name} with nodes and votes {v:?}",
            a.name
        ));
    }
    for n in &pair.nodes {
        let r = until(
            &format!("RabbitMQ of two seen from {}", n.name),
            t,
            POLL,
            || checks::rabbit_running(n, &both),
        )?;
        crate::log(&format!("{}: RabbitMQ running nodes {r:?}", n.name));
    }
    until(
        "RabbitMQ virtual host / running on both nodes",
        t,
        POLL,
        || checks::rabbit_vhost_running(&pair.nodes[0], "/", &both),
    )?;
    crate::log("RabbitMQ virtual host / running on both nodes");
    let limits = checks::MemcachedLimits::for_host(checks::host_nofile_hard()?);
    for n in &pair.nodes {
        let nofile = until(&format!("memcached on {}", n.name), t, POLL, || {
            checks::memcached(n, &limits, &pair.client, pair.dir())
        })?;
        crate::log(&format!(
            "{}: memcached on {}:11211 answered set/get from the client netns (memccp/memccat); -c {}, open-files limit {nofile}",
            n.name, n.address, limits.maxconns
        ));
    }
    Ok(())
}

/// What pacemaker runs: the VIP on exactly one node, that node the MariaDB
/// primary, the other replicating, and a write through the VIP arriving on
/// the replica. Returns the client that talks through the VIP.
pub fn check_pair(pair: &Pair, ready: &Ready) -> Result<SqlClient> {
    let t = Duration::from_secs(60);
    let primary = pair.node(&ready.primary)?;
    let replica = pair.node(&ready.replica)?;
    until(
        "VIP on exactly one node, the MariaDB primary",
        t,
        POLL,
        || {
            let holders = pair.vip_holders()?;
            ensure!(
                holders == [primary.name.clone()],
                "VIP {VIP} on {holders:?}"
            );
            for n in &pair.nodes {
                let p = checks::promoted_nodes(n)?;
                ensure!(
                    p == [primary.name.clone()],
                    "{} sees the MariaDB primary on {p:?}, VIP on {}",
                    n.name,
                    primary.name
                );
            }
            Ok(())
        },
    )?;
    crate::log(&format!(
        "VIP {VIP} only on {} and pacemaker promotes MariaDB there (as both nodes see it)",
        primary.name
    ));
    until("replication IO and SQL threads running", t, POLL, || {
        checks::replicating(replica, primary)
    })?;
    crate::log(&format!(
        "{}: replicating from {} (IO Yes, SQL Yes)",
        replica.name, primary.address
    ));

    let client = sql_client(pair, ready)?;
    let marker = format!("marker-{}", std::process::id());
    until(
        "a write through the VIP",
        Duration::from_secs(20),
        POLL,
        || {
            client.query(&format!(
            "INSERT INTO acks (id, note) VALUES (1, '{marker}') ON DUPLICATE KEY UPDATE note = VALUES(note)"
        ))
        },
    )?;
    let seen = until(
        &format!(
            "the row written through the VIP on replica {}",
            replica.name
        ),
        Duration::from_secs(20),
        POLL,
        || {
            let v = checks::sql(
                replica,
                &format!("SELECT note FROM {}.acks WHERE id = 1", writer::DB),
            )?;
            ensure!(
                v.trim() == marker,
                "row 1 on {} is `{}`",
                replica.name,
                v.trim()
            );
            Ok(v.trim().to_string())
        },
    )?;
    crate::log(&format!(
        "row written through VIP {VIP} read on replica {}: `{seen}`",
        replica.name
    ));
    Ok(client)
}

/// `nib-firstboot cluster` applied a second time leaves the CIB's
/// configuration as it was (issue 4: safe to run on every boot).
pub fn check_cib_idempotent(pair: &Pair) -> Result<()> {
    let cfg = |n: &Node| -> Result<(String, String)> {
        let xml = n.exec(&["cibadmin", "--query", "--scope", "configuration"])?;
        let cib = n
            .exec(&["cibadmin", "--query", "--scope", "cib"])
            .unwrap_or_default();
        let epoch = cib
            .lines()
            .next()
            .and_then(|l| l.split(" epoch=\"").nth(1))
            .and_then(|r| r.split('"').next())
            .unwrap_or("?")
            .to_string();
        Ok((xml, epoch))
    };
    let bootstrap = pair.node(NODES[0].0)?;
    let (before, e1) = cfg(bootstrap)?;
    let ran = bootstrap.exec_for(&["nib-firstboot", "cluster"], Duration::from_secs(120))?;
    ensure!(
        ran.success(),
        "second `nib-firstboot cluster` on {}: {}",
        bootstrap.name,
        ran.failure()
    );
    let (after, e2) = cfg(bootstrap)?;
    ensure!(
        before == after && e1 == e2,
        "CIB configuration changed by a second `nib-firstboot cluster` (epoch {e1} → {e2})"
    );
    crate::log(&format!(
        "second `nib-firstboot cluster` on {} left the CIB configuration unchanged (epoch {e1}, {} bytes)",
        bootstrap.name,
        after.len()
    ));
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Failover {
    pub killed: String,
    pub survivor: String,
    /// [`crate::host_uptime`] at the kill (to read the journals by).
    pub kill_uptime: f64,
    /// Kill → first insert started after the kill acknowledged through the VIP.
    pub write_secs: f64,
    /// Kill → the VIP on the survivor's interface.
    pub vip_secs: f64,
    pub attempts: usize,
    pub acked: usize,
    pub acked_after_kill: usize,
    pub present_on_new_primary: usize,
    pub missing: Vec<u64>,
}

/// Take the primary's link down and kill its PID 1 with a writer running
/// through the VIP; wait for the survivor to take the VIP and accept writes.
pub fn failover(
    pair: &mut Pair,
    ready: &Ready,
    client: &SqlClient,
    first_id: u64,
) -> Result<Failover> {
    let active = ready.primary.clone();
    let survivor = ready.replica.clone();
    let w = Writer::start(client.clone(), first_id, Duration::from_millis(100));
    until(
        "writer acknowledged before the failure",
        Duration::from_secs(15),
        POLL,
        || {
            let n = w.snapshot().iter().filter(|a| a.acked).count();
            ensure!(n >= 5, "{n} acknowledged inserts");
            Ok(())
        },
    )?;

    let t_kill = Instant::now();
    let kill_uptime = crate::host_uptime();
    crate::log(&format!(
        "FAILURE: {active}: link down, kill PID 1 (host uptime {kill_uptime:.2} s)"
    ));
    pair.node(&active)?
        .netns()
        .ip(&["link", "set", "eth0", "down"])?;
    pair.node_mut(&active)?.kill()?;

    let mut vip_at = None;
    let write_at = until(
        &format!("a write through VIP {VIP} on survivor {survivor}"),
        Duration::from_secs(120),
        Duration::from_millis(20),
        || {
            if vip_at.is_none() && pair.vip_holders()?.contains(&survivor) {
                vip_at = Some(t_kill.elapsed());
            }
            let first = w
                .snapshot()
                .into_iter()
                .filter(|a| a.acked && a.started >= t_kill)
                .map(|a| a.finished)
                .min();
            match first {
                Some(at) => Ok(at.duration_since(t_kill)),
                None => bail!(
                    "no acknowledged insert since the kill (VIP on {:?})",
                    pair.vip_holders()?
                ),
            }
        },
    )?;
    // Keep writing a little on the new primary, then stop.
    thread::sleep(Duration::from_secs(1));
    let attempts = w.finish();
    save_writer_timeline(pair, t_kill, &attempts);
    let vip_secs = vip_at.map(secs).unwrap_or(f64::NAN);
    crate::log(&format!(
        "failover: VIP on {survivor} {vip_secs:.2} s, first write through VIP acknowledged {:.2} s after the kill",
        write_at.as_secs_f64()
    ));

    let new_primary = pair.node(&survivor)?;
    until(
        &format!("{survivor} promoted"),
        Duration::from_secs(30),
        POLL,
        || {
            let p = checks::promoted_nodes(new_primary)?;
            ensure!(p == [survivor.clone()], "primary on {p:?}");
            Ok(())
        },
    )?;
    let acked: Vec<u64> = attempts.iter().filter(|a| a.acked).map(|a| a.id).collect();
    let present = ids_on(new_primary)?;
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect();
    let report = Failover {
        killed: active.clone(),
        survivor: survivor.clone(),
        kill_uptime,
        write_secs: secs(write_at),
        vip_secs,
        attempts: attempts.len(),
        acked: acked.len(),
        acked_after_kill: attempts
            .iter()
            .filter(|a| a.acked && a.started >= t_kill)
            .count(),
        present_on_new_primary: acked.len() - missing.len(),
        missing,
    };
    crate::log(&format!(
        "writer: {} inserts tried, {} acknowledged ({} after the kill), {} of the acknowledged on new primary {survivor}",
        report.attempts, report.acked, report.acked_after_kill, report.present_on_new_primary
    ));
    Ok(report)
}

/// Each insert's start and end relative to the kill (ms) and whether it
/// was acknowledged, as `writer.csv` in the log dir.
fn save_writer_timeline(pair: &Pair, t_kill: Instant, attempts: &[writer::Attempt]) {
    let rel = |t: Instant| -> i64 {
        if t >= t_kill {
            t.duration_since(t_kill).as_millis() as i64
        } else {
            -(t_kill.duration_since(t).as_millis() as i64)
        }
    };
    let mut csv = String::from("id,started_ms_after_kill,finished_ms_after_kill,acked\n");
    for a in attempts {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            a.id,
            rel(a.started),
            rel(a.finished),
            a.acked
        ));
    }
    let _ = std::fs::write(pair.log_dir.join("writer.csv"), csv);
}

/// RabbitMQ still serves on the survivor: an AMQP handshake from the
/// client and the survivor among its running nodes.
pub fn check_rabbit_survives(pair: &Pair, survivor: &str) -> Result<()> {
    let n = pair.node(survivor)?;
    let addr: SocketAddr = format!("{}:5672", n.address).parse()?;
    until(
        &format!("AMQP on {addr}"),
        Duration::from_secs(30),
        POLL,
        || checks::amqp_serves(&pair.client.path(), addr),
    )?;
    let t = Instant::now();
    // The local node only: cluster_status would wait on the dead peer
    // until Erlang's net_ticktime (60 s) declares it down.
    until(
        &format!("RabbitMQ running on {survivor}"),
        Duration::from_secs(60),
        POLL,
        || {
            n.exec_for(
                &["rabbitmq-diagnostics", "-q", "check_running"],
                Duration::from_secs(20),
            )?
            .into_stdout()
            .with_context(|| format!("on {survivor}"))
        },
    )?;
    crate::log(&format!(
        "RabbitMQ on {survivor}: AMQP Connection.Start from {addr}; `rabbitmq-diagnostics check_running` ok ({:.1} s)",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Bring the killed node back: drop the VIP it still holds (no fencing put
/// it down), boot (its networkd brings the link up). It must rejoin as replica of the survivor and
/// RabbitMQ must return to two.
pub fn rejoin(pair: &mut Pair, f: &Failover) -> Result<f64> {
    let vip = format!("{VIP}/{PREFIX}");
    {
        let old = pair.node(&f.killed)?;
        if old.netns().addrs("eth0")?.contains(&vip) {
            old.netns().ip(&["addr", "del", &vip, "dev", "eth0"])?;
            crate::log(&format!(
                "{}: removed stale VIP {vip} before restart",
                f.killed
            ));
        }
        // A power cycle leaves the NIC unconfigured: networkd of the new
        // boot configures it (an address left from outside makes it fail
        // the link, see Pair::create).
        old.netns().ip(&["addr", "flush", "dev", "eth0"])?;
    }
    let t = Instant::now();
    pair.node_mut(&f.killed)?.boot()?;
    let old = pair.node(&f.killed)?;
    let survivor = pair.node(&f.survivor)?;
    let long = Duration::from_secs(180);
    until(
        &format!("nib-firstboot.service to run on {}", old.name),
        long,
        Duration::from_millis(500),
        || checks::firstboot_done(old),
    )?;
    // The host-key and datadir units run after nib-firstboot.service.
    until(
        &format!("first boot's units to succeed on {}", old.name),
        Duration::from_secs(60),
        POLL,
        || checks::firstboot_succeeded(old),
    )?;
    until(
        &format!(
            "{} to replicate from new primary {}",
            old.name, survivor.name
        ),
        long,
        POLL,
        || checks::replicating(old, survivor),
    )?;
    let rejoin_secs = secs(t.elapsed());
    crate::log(&format!(
        "{} rejoined as replica of {} {rejoin_secs:.2} s after restart",
        old.name, survivor.name
    ));
    let both = names();
    let r = until("RabbitMQ back to two running nodes", long, POLL, || {
        checks::rabbit_running(survivor, &both)
    })?;
    crate::log(&format!("RabbitMQ running nodes {r:?}"));
    until(
        "RabbitMQ virtual host / running on both nodes again",
        long,
        POLL,
        || checks::rabbit_vhost_running(survivor, "/", &both),
    )?;
    until(
        "VIP and primary still on the survivor only",
        Duration::from_secs(30),
        POLL,
        || {
            let h = pair.vip_holders()?;
            ensure!(h == [survivor.name.clone()], "VIP on {h:?}");
            let p = checks::promoted_nodes(old)?;
            ensure!(
                p == [survivor.name.clone()],
                "{} sees the primary on {p:?}",
                old.name
            );
            Ok(())
        },
    )?;
    let on_survivor = ids_on(survivor)?;
    until(
        &format!("writer rows replicated to {}", old.name),
        Duration::from_secs(30),
        POLL,
        || {
            let on_old = ids_on(old)?;
            let lacking = on_survivor.difference(&on_old).count();
            ensure!(
                lacking == 0,
                "{lacking} of {} rows not yet on {}",
                on_survivor.len(),
                old.name
            );
            Ok(())
        },
    )?;
    crate::log(&format!(
        "{}: all {} rows of the new primary replicated; VIP and primary stay on {}",
        old.name,
        on_survivor.len(),
        survivor.name
    ));
    Ok(rejoin_secs)
}
