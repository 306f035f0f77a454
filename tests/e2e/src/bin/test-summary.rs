//! `make test`'s summary line (tests/run.sh calls it last):
//!
//!   test-summary --title "make test" --runs "make test,make e2e" PHASE=RC=LOG...
//!
//! Reads each phase's cargo test log, prints one line — passed, failed,
//! skipped, the skipped ones named with the target that runs them — and
//! exits 1 when a test failed, a phase failed, or a test was skipped that
//! one of `--runs` is meant to run (its `#[ignore]` reason says `run by: …`).

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use nib_e2e::summary::{parse, Summary};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("test-summary: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let mut args = std::env::args().skip(1);
    let (mut title, mut runs) = (String::from("tests"), String::new());
    let mut phases = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--title" => title = args.next().context("--title needs a value")?,
            "--runs" => runs = args.next().context("--runs needs a value")?,
            spec => {
                let mut it = spec.splitn(3, '=');
                let (Some(name), Some(rc), Some(log)) = (it.next(), it.next(), it.next()) else {
                    bail!("{spec}: want PHASE=RC=LOG");
                };
                let rc: i32 = rc.parse().with_context(|| format!("{spec}: exit code"))?;
                let text =
                    std::fs::read_to_string(log).with_context(|| format!("reading {log}"))?;
                phases.push((name.to_string(), rc, parse(&text)));
            }
        }
    }
    let runs: Vec<&str> = runs
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    let s = Summary::of(&phases);
    println!("{}", s.line(&title, &runs));
    Ok(s.ok(&runs))
}
