//! `make bench-e2e`: boot → cluster ready, and failover (kill → a write
//! through the VIP acknowledged by the survivor), median of N rounds
//! (`NIB_E2E_ROUNDS`, default 5). Each round is a fresh pair.

use std::process::ExitCode;

use anyhow::{ensure, Context, Result};
use nib_e2e::pair::{Options, Pair};
use nib_e2e::parse::median;
use nib_e2e::scenario;

struct Round {
    ready: scenario::Ready,
    failover: scenario::Failover,
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
        Ok(Round { ready, failover })
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
                    "bench-e2e round {i}: cluster ready {:.2} s (quorate {:.2}, RabbitMQ {:.2}, VIP {:.2}, replication {:.2}); failover {:.2} s (VIP {:.2} s); writer {} acked, {} on new primary",
                    r.ready.ready,
                    r.ready.quorate,
                    r.ready.rabbit,
                    r.ready.vip,
                    r.ready.replication,
                    r.failover.write_secs,
                    r.failover.vip_secs,
                    r.failover.acked,
                    r.failover.present_on_new_primary
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
    ExitCode::SUCCESS
}
