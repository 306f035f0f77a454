//! `make bench-e2e`: boot → cluster ready (with the arbiter: both qdevice
//! votes counted and qnetd listing both), failover (kill → a write through
//! the VIP acknowledged by the survivor), rejoin (the killed node booted →
//! replicating from the survivor) and quorum loss (the new primary cut from
//! its peer and the arbiter → the VIP gone from it), median of N rounds
//! (`NIB_E2E_ROUNDS`, default 5). Each round is a fresh pair.

use std::process::ExitCode;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nib_e2e::nemesis;
use nib_e2e::pair::{Options, Pair, ARBITER_PORT};
use nib_e2e::parse::median;
use nib_e2e::scenario;

struct Round {
    ready: scenario::Ready,
    failover: scenario::Failover,
    rejoin: f64,
    /// With the arbiter: the primary cut from peer and arbiter → its VIP gone.
    vip_released: Option<f64>,
}

/// Cut `primary` from its peer and the arbiter (the client keeps it) and
/// time until its eth0 no longer carries the VIP; the cut is healed after.
fn quorum_loss(pair: &Pair, primary: &str) -> Result<f64> {
    let me = pair.port_of(primary)?;
    let peer = pair.port_of(&pair.peer(primary)?.name)?;
    let t = Instant::now();
    nemesis::cut(pair.switch_netns(), &[(&me, &peer), (&me, ARBITER_PORT)])?;
    let released = nib_e2e::wait::until(
        &format!("{primary} without quorum to release the VIP"),
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let h = pair.vip_holders()?;
            ensure!(!h.iter().any(|n| n == primary), "VIP on {h:?}");
            Ok(t.elapsed().as_secs_f64())
        },
    );
    nemesis::heal(pair.switch_netns())?;
    released
}

/// Each round keeps its logs in `target/nib-e2e/bench/r<i>/`: journals
/// (short-monotonic, the clock of the start and kill uptimes printed),
/// service logs, boot profiles, `writer.csv`.
fn round(opts: &Options, i: u32) -> Result<Round> {
    let mut opts = opts.clone();
    opts.log_dir = opts.log_dir.join(format!("r{i}"));
    let mut pair = Pair::create(&opts, i)?;
    let res = (|| -> Result<Round> {
        pair.boot()?;
        let ready = scenario::wait_cluster_ready(&pair, scenario::ready_timeout())?;
        pair.save_boot_profile();
        let client = scenario::sql_client(&pair, &ready)?;
        let failover = scenario::failover(&mut pair, &ready, &client, 1000)?;
        let rejoin = scenario::rejoin(&mut pair, &failover)?;
        let vip_released = match pair.arbiter {
            Some(_) => Some(quorum_loss(&pair, &failover.survivor)?),
            None => None,
        };
        Ok(Round {
            ready,
            failover,
            rejoin,
            vip_released,
        })
    })();
    if res.is_err() {
        pair.save_diagnostics();
    }
    pair.save_logs();
    if let Ok(r) = &res {
        let _ = std::fs::write(
            opts.log_dir.join("timeline.txt"),
            format!(
                "started at host uptime {:.2} s\nready {:?}\nkilled {} at host uptime {:.2} s\nfailover {:?}\n",
                pair.started_uptime, r.ready, r.failover.killed, r.failover.kill_uptime, r.failover
            ),
        );
    }
    let run_id = pair.run_id.clone();
    let left = pair.teardown();
    ensure!(left.is_empty(), "run {run_id} left behind: {left:?}");
    res
}

fn main() -> ExitCode {
    let rounds: u32 = std::env::var("NIB_E2E_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let opts = Options::from_env("bench");
    // Rounds of an earlier run must not mix with this one's.
    let _ = std::fs::remove_dir_all(&opts.log_dir);
    let mut results = Vec::new();
    for i in 1..=rounds {
        match round(&opts, i).with_context(|| format!("round {i}")) {
            Ok(r) => {
                println!(
                    "bench-e2e round {i}: cluster ready {:.2} s (quorate {:.2}, qdevice {}, RabbitMQ {:.2}, VIP {:.2}, replication {:.2}); failover {:.2} s (VIP {:.2} s); writer {} acked, {} on new primary; rejoin {:.2} s; quorum loss -> VIP released {}",
                    r.ready.ready,
                    r.ready.quorate,
                    r.ready.qdevice.map_or("-".to_string(), |s| format!("{s:.2}")),
                    r.ready.rabbit,
                    r.ready.vip,
                    r.ready.replication,
                    r.failover.write_secs,
                    r.failover.vip_secs,
                    r.failover.acked,
                    r.failover.present_on_new_primary,
                    r.rejoin,
                    r.vip_released.map_or("- (no arbiter)".to_string(), |s| format!("{s:.2} s"))
                );
                results.push(r);
            }
            Err(e) => {
                eprintln!("bench-e2e: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let med = |f: &dyn Fn(&Round) -> f64| {
        median(&results.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    println!(
        "bench-e2e: cluster ready (both nodes started -> VIP + replication + RabbitMQ of two) median {:.2} s over {rounds} rounds (target <= 15 s)",
        med(&|r| r.ready.ready)
    );
    println!(
        "bench-e2e:   parts: corosync quorate {:.2} s, RabbitMQ of two {:.2} s, VIP {:.2} s, replication {:.2} s (medians)",
        med(&|r| r.ready.quorate),
        med(&|r| r.ready.rabbit),
        med(&|r| r.ready.vip),
        med(&|r| r.ready.replication)
    );
    println!(
        "bench-e2e: failover (kill -> write through VIP acknowledged) median {:.2} s over {rounds} rounds (target <= 3 s); VIP moved median {:.2} s",
        med(&|r| r.failover.write_secs),
        med(&|r| r.failover.vip_secs)
    );
    println!(
        "bench-e2e: rejoin (killed node booted -> replicating from the survivor) median {:.2} s; qdevice vote on both median {:.2} s",
        med(&|r| r.rejoin),
        med(&|r| r.ready.qdevice.unwrap_or(f64::NAN))
    );
    println!(
        "bench-e2e: quorum loss (primary cut from peer and arbiter -> VIP released) median {:.2} s",
        med(&|r| r.vip_released.unwrap_or(f64::NAN))
    );
    ExitCode::SUCCESS
}
