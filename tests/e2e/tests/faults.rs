//! The fault suite (issue 17's acceptance): each scenario on a fresh pair,
//! under SQL writers and an AMQP publisher with confirms, then one checker
//! line per scenario. Each plan names its setup (by default the arbiter,
//! fencing none); where the pair is not yet partition-safe the assertions
//! fail and the lines say by how much.

use std::path::PathBuf;

use anyhow::{bail, ensure, Result};
use nib_e2e::faults;
use nib_e2e::pair::{Options, Pair};

#[test]
#[ignore = "needs root and the built bookworm image (boots a pair per scenario, cuts links and power); run by: make e2e, or make e2e-faults alone"]
fn e2e_faults() -> Result<()> {
    let t0 = std::time::Instant::now();
    let publisher = PathBuf::from(env!("CARGO_BIN_EXE_amqp-publisher"));
    let plans = faults::selected();
    ensure!(
        !plans.is_empty(),
        "NIB_E2E_FAULTS names no scenario of {:?}",
        faults::plans().iter().map(|p| p.name).collect::<Vec<_>>()
    );
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for (round, plan) in plans.iter().enumerate() {
        let mut opts = Options::from_env(&format!("faults/{}", plan.name));
        opts.setup = plan.setup;
        let mut pair = Pair::create(&opts, round as u32)?;
        let result = faults::prepare(&mut pair)
            .and_then(|(_, client)| faults::run(&mut pair, plan, &client, &publisher));
        match &result {
            Ok(_) => pair.save_logs(),
            Err(e) => {
                nib_e2e::log(&format!("scenario {} FAILED to run: {e:#}", plan.name));
                pair.save_diagnostics();
                pair.save_logs();
            }
        }
        let run_id = pair.run_id.clone();
        let left = pair.teardown();
        ensure!(left.is_empty(), "run {run_id} left behind: {left:?}");
        match result {
            Ok(r) => reports.push(r),
            Err(e) => errors.push(format!("{}: {e:#}", plan.name)),
        }
    }
    nib_e2e::log(&format!(
        "fault suite took {:.1} s; checker lines:",
        t0.elapsed().as_secs_f64()
    ));
    for r in &reports {
        println!("{r}");
    }
    if !errors.is_empty() {
        bail!(
            "scenarios that did not run to the end: {}",
            errors.join(" | ")
        );
    }
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            let v = r.violations();
            (!v.is_empty()).then(|| format!("{}: {}", r.scenario, v.join(", ")))
        })
        .collect();
    ensure!(
        failed.is_empty(),
        "not partition-safe (issue 17): {}",
        failed.join(" | ")
    );
    Ok(())
}
