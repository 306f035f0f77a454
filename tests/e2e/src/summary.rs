//! `make test`'s last line: what passed, failed and was skipped across the
//! phases' logs (libtest's human output, as cargo test prints it), with the
//! skipped tests named and the target that runs each. A skipped test is
//! only acceptable when its `#[ignore = "…; run by: make X"]` names a target
//! other than the ones this run stands for.

use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    /// `#[ignore]`, with its reason (empty when it gave none).
    Ignored(String),
}

/// One test's outcome in one phase, keyed `binary::test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub outcome: Outcome,
}

/// The test binary a cargo `Running …` / `Doc-tests …` line starts.
fn binary_of(line: &str) -> Option<String> {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix("Doc-tests ") {
        return Some(format!("doctest {}", rest.trim()));
    }
    let rest = t.strip_prefix("Running ")?;
    let open = rest.rfind('(')?;
    let path = rest[open + 1..].trim_end().trim_end_matches(')');
    let file = path.rsplit('/').next().unwrap_or(path);
    // target/debug/deps/<name>-<16 hex>
    let name = match file.rsplit_once('-') {
        Some((n, h)) if h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()) => n,
        _ => file,
    };
    Some(name.to_string())
}

fn outcome_of(rest: &str) -> Option<Outcome> {
    match rest.trim_end() {
        "ok" => Some(Outcome::Passed),
        "FAILED" => Some(Outcome::Failed),
        "ignored" => Some(Outcome::Ignored(String::new())),
        r => r
            .strip_prefix("ignored, ")
            .map(|why| Outcome::Ignored(why.to_string())),
    }
}

/// Failed count of a `test result: …` line.
fn result_failed(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("test result: ")?;
    rest.split(';')
        .find_map(|part| part.trim().strip_suffix(" failed"))
        .and_then(|n| n.trim().parse().ok())
}

/// Every test outcome in one phase's log. A test run with `--nocapture`
/// prints `test NAME ... ` before its own output and its result later: on
/// a line of its own (which the test's output could fake, so the binary's
/// `test result:` counts have the last word) or in that `test result:`
/// line. A test still pending when its binary's output ends without a
/// result (the binary crashed), or the log ends, failed.
pub fn parse(log: &str) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut binary = String::from("?");
    let mut first_of_binary = 0;
    let mut pending: Option<String> = None;
    // records of this binary closed by a bare `ok` line: uncertain
    let mut uncertain: Vec<usize> = Vec::new();
    let fail_pending = |pending: &mut Option<String>, out: &mut Vec<Record>| {
        if let Some(key) = pending.take() {
            out.push(Record {
                key,
                outcome: Outcome::Failed,
            });
        }
    };
    for line in log.lines() {
        if let Some(b) = binary_of(line) {
            fail_pending(&mut pending, &mut out);
            binary = b;
            first_of_binary = out.len();
            uncertain.clear();
            continue;
        }
        if let Some(failed) = result_failed(line) {
            let seen = out[first_of_binary..]
                .iter()
                .filter(|r| r.outcome == Outcome::Failed)
                .count() as u64;
            let mut missing = failed.saturating_sub(seen);
            if let Some(key) = pending.take() {
                let outcome = if missing > 0 {
                    missing -= 1;
                    Outcome::Failed
                } else {
                    Outcome::Passed
                };
                out.push(Record { key, outcome });
            }
            for &i in uncertain.iter().rev() {
                if missing == 0 {
                    break;
                }
                out[i].outcome = Outcome::Failed;
                missing -= 1;
            }
            uncertain.clear();
            first_of_binary = out.len();
            continue;
        }
        if let Some(key) = pending.as_ref() {
            if let Some(o) = outcome_of(line) {
                if o == Outcome::Passed {
                    uncertain.push(out.len());
                }
                out.push(Record {
                    key: key.clone(),
                    outcome: o,
                });
                pending = None;
                continue;
            }
        }
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, tail)) = rest.split_once(" ... ") else {
            continue;
        };
        let key = format!("{binary}::{name}");
        match outcome_of(tail) {
            Some(o) => out.push(Record { key, outcome: o }),
            None => pending = Some(key),
        }
    }
    fail_pending(&mut pending, &mut out);
    out
}

/// The target a skip reason names (`…; run by: make test-outputs`).
pub fn runner_of(reason: &str) -> Option<&str> {
    let i = reason.find("run by: ")?;
    let t = reason[i + "run by: ".len()..].trim();
    Some(t.split([',', ';']).next().unwrap_or(t).trim())
}

#[derive(Debug, Default)]
pub struct Summary {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    /// Skipped everywhere: key → the target that runs it (None: no target).
    pub skipped: BTreeMap<String, Option<String>>,
    /// Phases that exited non-zero.
    pub failed_phases: Vec<String>,
}

impl Summary {
    /// Outcomes merged over phases: a test failed if it failed anywhere,
    /// passed if it passed somewhere, skipped if it was only ever ignored.
    pub fn of(phases: &[(String, i32, Vec<Record>)]) -> Summary {
        let mut by_key: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
        let mut s = Summary::default();
        for (name, rc, records) in phases {
            if *rc != 0 {
                s.failed_phases.push(format!("{name} (exit {rc})"));
            }
            for r in records {
                by_key.entry(&r.key).or_default().push(&r.outcome);
            }
        }
        for (key, outcomes) in by_key {
            if outcomes.iter().any(|o| **o == Outcome::Failed) {
                s.failed.push(key.to_string());
            } else if outcomes.iter().any(|o| **o == Outcome::Passed) {
                s.passed.push(key.to_string());
            } else {
                let runner = outcomes.iter().find_map(|o| match o {
                    Outcome::Ignored(why) => runner_of(why).map(str::to_string),
                    _ => None,
                });
                s.skipped.insert(key.to_string(), runner);
            }
        }
        s
    }

    /// Skipped tests that `runs` (the targets this run stands for) should
    /// have run, or that no target runs at all.
    pub fn wrongly_skipped(&self, runs: &[&str]) -> Vec<String> {
        self.skipped
            .iter()
            .filter(|(_, r)| match r {
                Some(t) => runs.contains(&t.as_str()),
                None => true,
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn ok(&self, runs: &[&str]) -> bool {
        self.failed.is_empty()
            && self.failed_phases.is_empty()
            && self.wrongly_skipped(runs).is_empty()
            && !self.passed.is_empty()
    }

    /// The one summary line.
    pub fn line(&self, title: &str, runs: &[&str]) -> String {
        let mut l = format!(
            "{title}: {} passed, {} failed, {} skipped",
            self.passed.len(),
            self.failed.len(),
            self.skipped.len()
        );
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, r) in &self.skipped {
            groups
                .entry(r.as_deref().unwrap_or("no target"))
                .or_default()
                .push(k);
        }
        if !groups.is_empty() {
            let parts: Vec<String> = groups
                .iter()
                .map(|(t, ks)| format!("{t}: {}", ks.join(", ")))
                .collect();
            let _ = write!(l, " ({})", parts.join("; "));
        }
        if !self.failed.is_empty() {
            let _ = write!(l, "; FAILED: {}", self.failed.join(", "));
        }
        let wrong = self.wrongly_skipped(runs);
        if !wrong.is_empty() {
            let _ = write!(
                l,
                "; SKIPPED BUT MEANT TO RUN HERE ({}): {}",
                runs.join(", "),
                wrong.join(", ")
            );
        }
        if !self.failed_phases.is_empty() {
            let _ = write!(l, "; phases failed: {}", self.failed_phases.join(", "));
        }
        if self.passed.is_empty() {
            l.push_str("; no test passed");
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURED: &str = "\
   Compiling nib v0.1.0
     Running unittests src/lib.rs (target/debug/deps/nib-0123456789abcdef)

running 3 tests
test plan::tests::key_changes ... ok
test seal::tests::whiteouts ... FAILED
test cache::tests::slow ... ignored, needs root; run by: make test

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running tests/outputs_boot.rs (target/debug/deps/outputs_boot-fedcba9876543210)

running 1 test
test pxe_boots_from_http_and_applies_seed ... ignored, needs a built image and QEMU; run by: make test-outputs

test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests nib_firstboot

running 1 test
test firstboot/src/lib.rs - doc (line 3) ... ok
";

    #[test]
    fn parses_captured_output_per_binary() {
        let r = parse(CAPTURED);
        assert_eq!(
            r,
            vec![
                Record {
                    key: "nib::plan::tests::key_changes".into(),
                    outcome: Outcome::Passed
                },
                Record {
                    key: "nib::seal::tests::whiteouts".into(),
                    outcome: Outcome::Failed
                },
                Record {
                    key: "nib::cache::tests::slow".into(),
                    outcome: Outcome::Ignored("needs root; run by: make test".into())
                },
                Record {
                    key: "outputs_boot::pxe_boots_from_http_and_applies_seed".into(),
                    outcome: Outcome::Ignored(
                        "needs a built image and QEMU; run by: make test-outputs".into()
                    )
                },
                Record {
                    key: "doctest nib_firstboot::firstboot/src/lib.rs - doc (line 3)".into(),
                    outcome: Outcome::Passed
                },
            ]
        );
    }

    #[test]
    fn nocapture_result_comes_after_the_tests_output() {
        let log = "\
     Running tests/pair.rs (target/release/deps/pair-00112233445566aa)
running 1 test
test e2e_two_node_pair ... [e2e    0.01s] creating netns
[e2e   40.00s] SUMMARY cluster ready 12 s
ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out
     Running tests/other.rs (target/release/deps/other-00112233445566ab)
test dies ... [noise]
test result: FAILED. 0 passed; 1 failed; 0 ignored
";
        let r = parse(log);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].key, "pair::e2e_two_node_pair");
        assert_eq!(r[0].outcome, Outcome::Passed);
        assert_eq!(r[1].key, "other::dies");
        assert_eq!(r[1].outcome, Outcome::Failed);
    }

    #[test]
    fn a_fake_ok_in_the_output_or_a_crash_is_not_a_pass() {
        let log = "\
     Running tests/pair.rs (target/release/deps/pair-00112233445566aa)
test e2e ... [e2e] step
ok
[e2e] later it fails
FAILED
test result: FAILED. 0 passed; 1 failed; 0 ignored
     Running tests/crash.rs (target/release/deps/crash-00112233445566ab)
test dies_hard ... [output]
     Running tests/next.rs (target/release/deps/next-00112233445566ac)
test fine ... ok
test result: ok. 1 passed; 0 failed; 0 ignored
     Running tests/last.rs (target/release/deps/last-00112233445566ad)
test cut_off ... [the log ends]
";
        let r = parse(log);
        let got: Vec<(&str, &Outcome)> = r.iter().map(|r| (r.key.as_str(), &r.outcome)).collect();
        assert_eq!(
            got,
            vec![
                ("pair::e2e", &Outcome::Failed),
                ("crash::dies_hard", &Outcome::Failed),
                ("next::fine", &Outcome::Passed),
                ("last::cut_off", &Outcome::Failed),
            ]
        );
    }

    #[test]
    fn a_test_skipped_in_one_phase_and_run_in_another_counts_once_as_run() {
        let skip = Record {
            key: "ocf_agent::promote".into(),
            outcome: Outcome::Ignored("needs root; run by: make test".into()),
        };
        let ran = Record {
            key: "ocf_agent::promote".into(),
            outcome: Outcome::Passed,
        };
        let boot = Record {
            key: "outputs_boot::pxe".into(),
            outcome: Outcome::Ignored("needs QEMU; run by: make test-outputs".into()),
        };
        let s = Summary::of(&[
            ("cargo".into(), 0, vec![skip.clone(), boot.clone()]),
            ("root".into(), 0, vec![ran]),
        ]);
        assert_eq!(s.passed, vec!["ocf_agent::promote".to_string()]);
        assert!(s.ok(&["make test", "make e2e"]));
        assert_eq!(
            s.line("make test", &["make test"]),
            "make test: 1 passed, 0 failed, 1 skipped (make test-outputs: outputs_boot::pxe)"
        );
        // never run by the phase meant to run it: the run fails
        let s = Summary::of(&[("cargo".into(), 0, vec![skip, boot])]);
        assert!(!s.ok(&["make test"]));
        assert!(s
            .line("make test", &["make test"])
            .contains("SKIPPED BUT MEANT TO RUN HERE (make test): ocf_agent::promote"));
    }

    #[test]
    fn a_skip_without_a_target_or_a_failed_phase_fails_the_run() {
        let r = Record {
            key: "x::t".into(),
            outcome: Outcome::Ignored(String::new()),
        };
        let p = Record {
            key: "x::p".into(),
            outcome: Outcome::Passed,
        };
        let s = Summary::of(&[("cargo".into(), 0, vec![r, p.clone()])]);
        assert_eq!(s.wrongly_skipped(&["make test"]), vec!["x::t".to_string()]);
        let s = Summary::of(&[("e2e".into(), 2, vec![p])]);
        assert!(!s.ok(&["make test"]));
        assert!(s.line("t", &[]).ends_with("phases failed: e2e (exit 2)"));
    }

    #[test]
    fn runner_is_read_from_the_reason() {
        assert_eq!(
            runner_of("needs QEMU; run by: make test-outputs"),
            Some("make test-outputs")
        );
        assert_eq!(runner_of("needs root"), None);
    }
}
