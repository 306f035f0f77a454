//! The fault suite (`make e2e-faults`, issue 17's acceptance harness):
//! under a workload — SQL inserts every 200 ms through the VIP and through
//! each node's own address, an AMQP publisher with confirms — a nemesis
//! cuts the link between the controllers or the power of the primary;
//! samplers watch who is writable and who holds the VIP; after the heal
//! the checker reads the history and the final state and prints one line
//! per scenario (see [`crate::checker`]). A scenario is a [`Plan`]: new
//! faults only add plans.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::amqp;
use crate::bmc::{unix_now, Power};
use crate::checker::{self, FinalNode, ReplicaState, Report};
use crate::checks;
use crate::cluster::{Setup, CLIENT, PREFIX, VIP};
use crate::nemesis::{self, Host};
use crate::node::Node;
use crate::pair::{Pair, ARBITER_PORT, CLIENT_PORT};
use crate::parse;
use crate::sampler::{self, Sampler, Target};
use crate::scenario::{self, Ready};
use crate::wait::until;
use crate::writer::{self, SqlClient, Workload, DB};

const POLL: Duration = Duration::from_millis(500);

/// The fault a scenario injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// (a) Drop every frame between the two controllers' switch ports; both
    /// keep the arbiter and the client. Heal: remove the rules.
    CutControllers,
    /// (c) As [`Fault::CutControllers`] on a `two_node` pair fenced by
    /// IPMI (simulated BMCs whose power-off kills the node): the fence
    /// race decides; the fenced node is rebooted by its BMC (on event:
    /// booted again) and waits, cut off, for its peer.
    CutControllersFenced,
    /// (b) The primary cut from its peer and from the arbiter; the client
    /// still reaches it (the dangerous case). Heal: remove the rules.
    IsolatePrimary,
    /// (b) The arbiter cut from the primary only: nothing may move.
    ArbiterSeesOne,
    /// (e) The primary's link down and its PID 1 killed. Heal: boot it again.
    PowerCutPrimary,
    /// (d) The arbiter power-cut; `first` later (the pair on 2 of 3
    /// votes) the primary too: the survivor has 1 of 3 and must not serve
    /// for `hold`. Heal: the arbiter and the primary booted again.
    ArbiterDownThenNodeDies { first: Duration },
    /// (e) The replica power-cut, `hold` of writes on the primary alone,
    /// then the primary power-cut: the stale replica is started alone and
    /// must wait for `alone` (no VIP, nothing writable); then the other
    /// starts (the heal) and the node with the highest GTID is primary.
    PowerCutBothColdStartOne { alone: Duration },
    /// (e) The replica power-cut, its root replaced by the image's (a new
    /// empty disk) with the same seed, booted after `hold` (the heal): it
    /// rejoins and holds every acknowledged row.
    ReplaceReplicaEmpty,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: &'static str,
    /// With or without the arbiter, which fencing (a plan without the
    /// arbiter gets `accept_split_brain = true`).
    pub setup: Setup,
    pub fault: Fault,
    /// How long the fault lasts.
    pub hold: Duration,
    /// How long after the heal to wait for convergence.
    pub converge_wait: Duration,
}

/// Issue 17's scenarios, in the order `make e2e-faults` runs them.
pub fn plans() -> Vec<Plan> {
    let s = Duration::from_secs;
    let plan = |name, fault, hold, converge_wait| Plan {
        name,
        setup: Setup::ARBITER,
        fault,
        hold: s(hold),
        converge_wait: s(converge_wait),
    };
    vec![
        plan("cut-controllers-45s", Fault::CutControllers, 45, 90),
        Plan {
            setup: Setup::TWO_NODE_IPMI,
            ..plan(
                "cut-controllers-ipmi-45s",
                Fault::CutControllersFenced,
                45,
                120,
            )
        },
        plan("isolate-primary-45s", Fault::IsolatePrimary, 45, 90),
        plan("arbiter-sees-one-45s", Fault::ArbiterSeesOne, 45, 90),
        // 20 s on 2 of 3 votes shows writes acknowledged without the
        // arbiter; 30 s alone is three times the VIP release window.
        plan(
            "arbiter-down-then-node-dies",
            Fault::ArbiterDownThenNodeDies { first: s(20) },
            30,
            240,
        ),
        // Held past RabbitMQ's net_ticktime (60 s ± 25 %), after which the
        // survivor declares its peer down; the wait includes the boot.
        plan("power-cut-primary", Fault::PowerCutPrimary, 80, 240),
        plan(
            "power-cut-both-cold-start-one",
            Fault::PowerCutBothColdStartOne { alone: s(40) },
            10,
            240,
        ),
        plan("replace-replica-empty", Fault::ReplaceReplicaEmpty, 10, 240),
    ]
}

/// `NIB_E2E_FAULTS=name,…` picks scenarios (default: all).
pub fn selected() -> Vec<Plan> {
    match std::env::var("NIB_E2E_FAULTS") {
        Ok(v) if !v.trim().is_empty() => {
            let want: Vec<&str> = v.split(',').map(str::trim).collect();
            plans()
                .into_iter()
                .filter(|p| want.contains(&p.name))
                .collect()
        }
        _ => plans(),
    }
}

/// Boot, wait for the cluster (and RabbitMQ's `/` on both), create the SQL
/// user, the writers' and the probes' tables; the client through the VIP.
pub fn prepare(pair: &mut Pair) -> Result<(Ready, SqlClient)> {
    scenario::boot_and_reach(pair)?;
    let ready = scenario::wait_cluster_ready(pair, scenario::ready_timeout())?;
    let both: Vec<&str> = pair.nodes.iter().map(|n| n.name.as_str()).collect();
    until(
        "RabbitMQ virtual host / running on both nodes",
        Duration::from_secs(90),
        POLL,
        || checks::rabbit_vhost_running(&pair.nodes[0], "/", &both),
    )?;
    let client = scenario::sql_client(pair, &ready)?;
    checks::sql(pair.node(&ready.primary)?, &sampler::setup_sql())?;
    let replica = pair.node(&ready.replica)?;
    until(
        "the probe table on the replica",
        Duration::from_secs(30),
        POLL,
        || {
            checks::sql(
                replica,
                &format!("SELECT COUNT(*) FROM {DB}.{}", sampler::PROBE_TABLE),
            )
        },
    )?;
    Ok((ready, client))
}

fn hosts(pair: &Pair) -> Vec<Host> {
    let mut h: Vec<Host> = pair
        .nodes
        .iter()
        .map(|n| Host {
            name: n.name.clone(),
            netns: n.netns().name().to_string(),
            address: n.address.clone(),
        })
        .collect();
    if let Some(a) = &pair.arbiter {
        h.push(Host {
            name: a.name.clone(),
            netns: a.netns().name().to_string(),
            address: a.address.clone(),
        });
    }
    h.push(Host {
        name: "client".into(),
        netns: pair.client.name().to_string(),
        address: CLIENT.to_string(),
    });
    h
}

/// Ping every way and require exactly `cut` (pairs of host names) to fail.
fn show_matrix(pair: &Pair, when: &str, cut: &[(&str, &str)]) -> Result<()> {
    // A frame lost to a neighbour entry still resolving is not a cut:
    // a few tries before the matrix counts.
    let mut last = String::new();
    for _ in 0..3 {
        let m = nemesis::ping_matrix(&hosts(pair));
        let table = nemesis::format_matrix(&m);
        match nemesis::matrix_is(&m, cut) {
            Ok(()) => {
                crate::log(&format!(
                    "ping matrix {when} (ICMP echo, `--` = no reply):\n{table}"
                ));
                return Ok(());
            }
            Err(e) => last = format!("{e:#}\n{table}"),
        }
        thread::sleep(Duration::from_secs(1));
    }
    bail!("ping matrix {when}: {last}")
}

/// Node state for the checker (root over the node's socket); what cannot
/// be read stays `None`.
fn final_node(n: &Node, with_ids: bool) -> FinalNode {
    let mut f = FinalNode {
        name: n.name.clone(),
        address: n.address.clone(),
        alive: n.running(),
        ..Default::default()
    };
    if !f.alive {
        return f;
    }
    let want = format!("{VIP}/{PREFIX}");
    f.vip = n.netns().addrs("eth0").is_ok_and(|a| a.contains(&want));
    if let Ok(out) = checks::sql(n, "SELECT @@global.read_only, @@global.gtid_current_pos") {
        let mut cols = out.lines().next().unwrap_or("").split('\t');
        f.read_only = match cols.next().map(str::trim) {
            Some("1") => Some(true),
            Some("0") => Some(false),
            _ => None,
        };
        f.gtid = cols.next().map(|g| g.trim().to_string());
    }
    if let Ok(Some(kv)) = checks::replica_status(n) {
        f.replica = Some(ReplicaState {
            master_host: parse::field(&kv, "Master_Host").unwrap_or("").to_string(),
            io: parse::field(&kv, "Slave_IO_Running") == Some("Yes"),
            sql: parse::field(&kv, "Slave_SQL_Running") == Some("Yes"),
        });
    }
    if with_ids {
        f.ids = checks::sql(n, &format!("SELECT id FROM {DB}.acks"))
            .ok()
            .and_then(|out| {
                out.lines()
                    .map(|l| l.trim().parse::<u64>().ok())
                    .collect::<Option<BTreeSet<u64>>>()
            });
    }
    f
}

fn describe(nodes: &[FinalNode]) -> String {
    nodes
        .iter()
        .map(|n| {
            let repl = n.replica.as_ref().map_or("not a replica".to_string(), |r| {
                format!(
                    "replica of {} IO={} SQL={}",
                    r.master_host,
                    if r.io { "Yes" } else { "No" },
                    if r.sql { "Yes" } else { "No" }
                )
            });
            format!(
                "{}: {} vip={} read_only={:?} gtid={} {repl} rows={}",
                n.name,
                if n.alive { "up" } else { "down" },
                n.vip,
                n.read_only,
                n.gtid.as_deref().unwrap_or("?"),
                n.ids
                    .as_ref()
                    .map_or("?".to_string(), |i| i.len().to_string())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The VIP holder now, when there is exactly one.
fn primary_now(pair: &Pair) -> Result<String> {
    let h = pair.vip_holders()?;
    ensure!(h.len() == 1, "VIP {VIP} on {h:?}, not on one node");
    Ok(h[0].clone())
}

/// Inserts acknowledged so far, all streams.
fn acked_total(w: &Workload) -> usize {
    w.acked().iter().map(|s| s.1).sum()
}

/// Power cut: the node's link down and its PID 1 killed.
fn power_cut(pair: &mut Pair, name: &str, what: &str) -> Result<()> {
    crate::log(&format!(
        "NEMESIS power cut {name} ({what}): link down, kill PID 1"
    ));
    let n = if pair.arbiter.as_ref().is_some_and(|a| a.name == name) {
        pair.arbiter_mut()?
    } else {
        pair.node_mut(name)?
    };
    n.netns().ip(&["link", "set", "eth0", "down"])?;
    n.kill()
}

/// Power on again: as scenario::rejoin, the NIC unconfigured (no fencing
/// took a VIP away; networkd of the new boot configures it), then boot.
fn power_on(pair: &mut Pair, name: &str) -> Result<()> {
    crate::log(&format!("NEMESIS power on {name}"));
    let n = if pair.arbiter.as_ref().is_some_and(|a| a.name == name) {
        pair.arbiter_mut()?
    } else {
        pair.node_mut(name)?
    };
    n.netns().ip(&["addr", "flush", "dev", "eth0"])?;
    n.boot()
}

/// Until `hold` after `from`: be the power the simulated BMCs switch. A
/// node whose BMC went off is dead already (its hook killed PID 1): the
/// harness reaps it; when that BMC goes on again (fence_ipmilan's reboot)
/// the node boots. Returns what happened, for the report.
fn follow_fencing(pair: &mut Pair, from: Instant, hold: Duration) -> Result<String> {
    let unix_from = unix_now() - from.elapsed().as_secs_f64();
    let mut seen = vec![0usize; pair.bmcs.len()];
    let mut notes = Vec::new();
    while from.elapsed() < hold {
        for i in 0..pair.bmcs.len() {
            let events = pair.bmcs[i].events()?;
            for ev in &events[seen[i]..] {
                let name = pair.nodes[i].name.clone();
                let at = ev.at_unix_s - unix_from;
                match ev.power {
                    Power::Off => {
                        crate::log(&format!(
                            "FENCED {name}: its BMC powered it off {at:.1} s after the cut"
                        ));
                        pair.node_mut(&name)?.kill()?;
                        notes.push(format!("{name} off at {at:.1} s"));
                    }
                    Power::On => {
                        notes.push(format!("{name} on at {at:.1} s"));
                        if !pair.node(&name)?.running() {
                            power_on(pair, &name)?;
                            pair.arm_bmcs()?;
                        }
                    }
                }
            }
            seen[i] = events.len();
        }
        thread::sleep(Duration::from_millis(100));
    }
    if notes.is_empty() {
        notes.push("no node fenced".into());
    }
    Ok(format!(" (fencing: {})", notes.join(", ")))
}

/// One scenario on a booted, ready pair: workload, fault, heal,
/// convergence, final state, checker. The report, also written as
/// `report.txt` (with the histories as CSV) in the pair's log dir.
pub fn run(
    pair: &mut Pair,
    plan: &Plan,
    vip_client: &SqlClient,
    publisher_bin: &Path,
) -> Result<Report> {
    let t0 = Instant::now();
    let mut targets = vec![("vip".to_string(), vip_client.clone())];
    for n in &pair.nodes {
        targets.push((n.name.clone(), vip_client.with_host(&n.address)));
    }
    let sample_targets: Vec<Target> = pair
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Target {
            name: n.name.clone(),
            netns: n.netns().name().to_string(),
            sql: vip_client.with_host(&n.address),
            first_id: (i as u64 + 1) * 1_000_000_000,
            pid1: n.pid1_handle(),
        })
        .collect();
    let toml = pair
        .cluster_toml
        .clone()
        .context("pair has no cluster.toml")?;
    let amqp_client = amqp::Client {
        bin: publisher_bin.to_path_buf(),
        netns: pair.client.name().to_string(),
        hosts: pair.nodes.iter().map(|n| n.address.clone()).collect(),
        password: amqp::password(&toml)?,
        log: pair.log_dir.join("amqp-publisher.stderr.txt"),
    };
    show_matrix(pair, "before the fault", &[])?;

    let workload = Workload::start(targets, 1_000_000, Duration::from_millis(200));
    let samplers = Sampler::start(sample_targets, Duration::from_secs(1));
    let publisher = amqp_client.publish()?;
    until(
        "the workload acknowledged and confirmed before the fault",
        Duration::from_secs(30),
        POLL,
        || {
            let vip = workload.acked().first().map_or(0, |s| s.1);
            let c = publisher.confirmed();
            ensure!(
                vip >= 5 && c >= 5,
                "{vip} inserts acknowledged through the VIP, {c} messages confirmed"
            );
            Ok(())
        },
    )?;

    let names: Vec<String> = pair.nodes.iter().map(|n| n.name.clone()).collect();
    let t_fault = Instant::now();
    let mut timeline = checker::Timeline {
        faults: vec![t_fault],
        must_not_serve: Vec::new(),
    };
    let t_heal;
    let mut heal_note = String::new();
    let hold_until = |from: Instant, d: Duration| thread::sleep(d.saturating_sub(from.elapsed()));
    match plan.fault {
        Fault::CutControllers
        | Fault::CutControllersFenced
        | Fault::IsolatePrimary
        | Fault::ArbiterSeesOne => {
            let fenced = plan.fault == Fault::CutControllersFenced;
            if fenced {
                pair.arm_bmcs()?;
            }
            let primary = primary_now(pair)?;
            let peer = pair.peer(&primary)?.name.clone();
            let arbiter = pair.arbiter.as_ref().map(|a| a.name.clone());
            let need_arbiter = || {
                arbiter
                    .clone()
                    .with_context(|| format!("plan {} needs the arbiter", plan.name))
            };
            let cut: Vec<(String, String)> = match plan.fault {
                Fault::CutControllers | Fault::CutControllersFenced => {
                    vec![(names[0].clone(), names[1].clone())]
                }
                Fault::IsolatePrimary => vec![
                    (primary.clone(), peer.clone()),
                    (primary.clone(), need_arbiter()?),
                ],
                _ => vec![(primary.clone(), need_arbiter()?)],
            };
            let ports: Vec<(String, String)> = cut
                .iter()
                .map(|(a, b)| Ok((pair.port_of(a)?, pair.port_of(b)?)))
                .collect::<Result<_>>()?;
            ensure!(
                ports
                    .iter()
                    .all(|(a, b)| a != CLIENT_PORT && b != CLIENT_PORT),
                "cutting the client's port"
            );
            let port_refs: Vec<(&str, &str)> = ports
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            crate::log(&format!(
                "NEMESIS {}: cut {cut:?} (primary {primary}, ports {ports:?}; the arbiter's is {ARBITER_PORT})",
                plan.name
            ));
            nemesis::cut(pair.switch_netns(), &port_refs)?;
            if fenced {
                // (no matrix: the fence may kill a node while it is taken)
                heal_note = follow_fencing(pair, t_fault, plan.hold)?;
            } else {
                let cut_refs: Vec<(&str, &str)> =
                    cut.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                show_matrix(pair, "during the cut", &cut_refs)?;
                hold_until(t_fault, plan.hold);
            }
            if let Ok(l) = nemesis::listing(pair.switch_netns()) {
                crate::log(&format!("the cut before heal, with its counters:\n{l}"));
            }
            nemesis::heal(pair.switch_netns())?;
            t_heal = Instant::now();
            show_matrix(pair, "after the heal", &[])?;
        }
        Fault::PowerCutPrimary => {
            let victim = primary_now(pair)?;
            power_cut(pair, &victim, "the primary")?;
            hold_until(t_fault, plan.hold);
            t_heal = Instant::now();
            power_on(pair, &victim)?;
            heal_note = format!(" (heal = boot of {victim})");
        }
        Fault::ArbiterDownThenNodeDies { first } => {
            let arbiter = pair.arbiter()?.name.clone();
            let victim = primary_now(pair)?;
            let before = acked_total(&workload);
            power_cut(pair, &arbiter, "the arbiter")?;
            hold_until(t_fault, first);
            let on_two = acked_total(&workload) - before;
            crate::log(&format!(
                "{on_two} inserts acknowledged in {:.0} s on 2 of 3 votes (arbiter down)",
                first.as_secs_f64()
            ));
            let t_second = Instant::now();
            timeline.faults.push(t_second);
            power_cut(pair, &victim, "the primary; the survivor has 1 of 3 votes")?;
            hold_until(t_second, plan.hold);
            timeline.must_not_serve.push((t_second, Instant::now()));
            t_heal = Instant::now();
            power_on(pair, &arbiter)?;
            power_on(pair, &victim)?;
            heal_note =
                format!(" (heal = boot of {arbiter} and {victim}; {on_two} acked on 2 of 3 votes)");
        }
        Fault::PowerCutBothColdStartOne { alone } => {
            let primary = primary_now(pair)?;
            let stale = pair.peer(&primary)?.name.clone();
            power_cut(pair, &stale, "the replica")?;
            hold_until(t_fault, plan.hold);
            let t_both = Instant::now();
            timeline.faults.push(t_both);
            power_cut(pair, &primary, "the primary: both down")?;
            thread::sleep(Duration::from_secs(3));
            let t_alone = Instant::now();
            timeline.faults.push(t_alone);
            power_on(pair, &stale)?;
            crate::log(&format!(
                "{stale} (stale: down while {primary} took writes) started alone; it must wait"
            ));
            // It boots first: the span counts from when it could serve.
            hold_until(t_alone, alone);
            // from the second power cut: nothing may serve until the heal
            timeline.must_not_serve.push((t_both, Instant::now()));
            t_heal = Instant::now();
            power_on(pair, &primary)?;
            heal_note = format!(" (heal = boot of {primary}, the node with the newest data, {:.0} s after {stale} alone)", alone.as_secs_f64());
        }
        Fault::ReplaceReplicaEmpty => {
            let primary = primary_now(pair)?;
            let replica = pair.peer(&primary)?.name.clone();
            power_cut(pair, &replica, "the replica")?;
            pair.replace_root(&replica)?;
            hold_until(t_fault, plan.hold);
            t_heal = Instant::now();
            power_on(pair, &replica)?;
            heal_note = format!(" (heal = boot of {replica} on an empty root, same seed)");
        }
    }
    // The workload stops at the heal: convergence is the pair's own work.
    let writers = thread::spawn(move || workload.finish());
    let confirmed_at_heal = publisher.confirmed();

    let mut converged_s = None;
    let mut last = Vec::new();
    while t_heal.elapsed() < plan.converge_wait {
        last = pair.nodes.iter().map(|n| final_node(n, false)).collect();
        if checker::converged(&last) {
            converged_s = Some(t_heal.elapsed().as_secs_f64());
            break;
        }
        thread::sleep(Duration::from_secs(1));
    }
    match converged_s {
        Some(s) => crate::log(&format!(
            "converged {s:.1} s after the heal{heal_note}: {}",
            describe(&last)
        )),
        None => crate::log(&format!(
            "not converged {:.0} s after the heal{heal_note}: {}",
            plan.converge_wait.as_secs_f64(),
            describe(&last)
        )),
    }
    let history = writers
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
    if !timeline.must_not_serve.is_empty() {
        // After an outage by design the brokers boot with the heal: give the
        // publisher time to resume, for publish_resumed_s (not a pass rule).
        if let Err(e) = until(
            "a confirm after the heal",
            Duration::from_secs(120),
            POLL,
            || {
                ensure!(publisher.confirmed() > confirmed_at_heal, "none yet");
                Ok(())
            },
        ) {
            crate::log(&format!("AMQP: {e:#}"));
        }
    }
    let published = publisher.finish()?;
    let rounds = samplers.finish();

    let end: Vec<FinalNode> = pair.nodes.iter().map(|n| final_node(n, true)).collect();
    crate::log(&format!("final state: {}", describe(&end)));
    let consumed = match amqp_client.drain(Duration::from_secs(60)) {
        Ok((host, ids)) => {
            crate::log(&format!(
                "AMQP: drained {} messages of {} through {host}",
                ids.len(),
                amqp::QUEUE
            ));
            Some(ids)
        }
        Err(e) => {
            crate::log(&format!("AMQP: could not read {} back: {e:#}", amqp::QUEUE));
            None
        }
    };
    let amqp_run = published.run(consumed);
    let report = checker::check(
        plan.name,
        &history,
        &rounds,
        &timeline,
        &end,
        converged_s,
        Some(&amqp_run),
    );

    let dir = &pair.log_dir;
    let _ = fs::write(dir.join("history.csv"), writer::history_csv(t0, &history));
    let _ = fs::write(dir.join("samples.csv"), sampler::rounds_csv(t0, &rounds));
    let _ = fs::write(dir.join("amqp.csv"), published.csv(t0));
    let timeline = format!(
        "t0 (workload start) = 0 ms; fault at {} ms; heal at {} ms; history/sample/amqp times in ms after t0\n",
        t_fault.duration_since(t0).as_millis(),
        t_heal.duration_since(t0).as_millis()
    );
    let streams: Vec<String> = report
        .streams
        .iter()
        .map(|(s, a, f, u)| format!("{s}: acked {a} failed {f} unknown {u}"))
        .collect();
    let detail = format!(
        "{report}\nfinal primary {}; lost ids (first 20) {:?}\nstreams: {}\nAMQP: {} published, {} confirmed\nfinal state: {}\n{timeline}",
        report.final_primary.as_deref().unwrap_or("(none)"),
        report.lost_ids,
        streams.join("; "),
        report.amqp_published.unwrap_or(0),
        report.amqp_confirmed.unwrap_or(0),
        describe(&end),
    );
    let _ = fs::write(dir.join("report.txt"), &detail);
    crate::log(&format!("scenario {}:\n{detail}", plan.name));
    Ok(report)
}
