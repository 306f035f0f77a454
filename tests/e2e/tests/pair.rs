//! The end-to-end run: one pair boot covers every check, the failover and
//! the rejoin (each pair boot costs ~30 s of both cores).

use anyhow::{ensure, Result};
use nib_e2e::pair::{upto, Options, Pair, Upto};
use nib_e2e::scenario;

fn run(pair: &mut Pair) -> Result<()> {
    scenario::boot_and_reach(pair)?;
    if upto() == Upto::Boot {
        nib_e2e::log("NIB_E2E_UPTO=boot: harness only, stopping after boot and reachability");
        return Ok(());
    }
    // Ready first, while nothing else polls the nodes (its figures are
    // then comparable with `make bench-e2e`); if it never comes, the
    // per-node checks usually name the cause.
    let ready = match scenario::wait_cluster_ready(pair, scenario::ready_timeout()) {
        Ok(r) => r,
        Err(e) => {
            return Err(match scenario::check_nodes(pair) {
                Ok(()) => e,
                Err(n) => e.context(format!("{n:#}")),
            });
        }
    };
    pair.save_boot_profile();
    scenario::check_nodes(pair)?;
    let client = scenario::check_pair(pair, &ready)?;
    scenario::check_cib_idempotent(pair)?;
    if upto() == Upto::Cluster {
        return Ok(());
    }
    let f = scenario::failover(pair, &ready, &client, 1000)?;
    scenario::check_rabbit_survives(pair, &f.survivor)?;
    ensure!(
        f.missing.is_empty(),
        "{} acknowledged inserts missing on the new primary {}: {:?}",
        f.missing.len(),
        f.survivor,
        f.missing
    );
    let rejoin = scenario::rejoin(pair, &f)?;
    // Journals of the whole run, for timing analysis (failover, rejoin).
    pair.save_diagnostics();
    nib_e2e::log(&format!(
        "SUMMARY cluster ready {:.2} s; failover: VIP {:.2} s, write through VIP {:.2} s; writer {} acknowledged, {} on new primary; rejoin {:.2} s",
        ready.ready, f.vip_secs, f.write_secs, f.acked, f.present_on_new_primary, rejoin
    ));
    Ok(())
}

/// Boots the pair from the built image (root): `make e2e` runs it, with
/// `--ignored`, after building the image.
#[test]
#[ignore = "needs root and the built bookworm image (boots the pair); run by: make e2e"]
fn e2e_two_node_pair() -> Result<()> {
    let t0 = std::time::Instant::now();
    let opts = Options::from_env("pair");
    let mut pair = Pair::create(&opts, 0)?;
    let result = run(&mut pair);
    if let Err(e) = &result {
        nib_e2e::log(&format!("FAILED: {e:#}"));
        pair.save_diagnostics();
    }
    let run_id = pair.run_id.clone();
    let left = pair.teardown();
    ensure!(left.is_empty(), "run {run_id} left behind: {left:?}");
    nib_e2e::log(&format!(
        "teardown of {run_id}: no netns, mount, cgroup, process or run dir left; suite took {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    result
}
