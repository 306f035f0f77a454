//! The fault suite's checker: from what the workload saw (every insert and
//! its outcome), what the samplers saw, what the AMQP publisher had
//! confirmed and what the queue held afterwards, and each node's state at
//! the end, one line per scenario:
//!
//! `scenario=NAME acked=N lost=L writable_primaries_max=W vip_holders_max=V converged_s=C amqp_confirmed_lost=M publish_gap_s=G`
//!
//! - `acked`: inserts acknowledged to the workload (all streams);
//! - `lost`: of those, the ids missing on the final primary;
//! - `writable_primaries_max` / `vip_holders_max`: the most nodes writable
//!   (read_only OFF and a probe insert committed) / holding the VIP in one
//!   sampling round;
//! - `converged_s`: seconds after the heal until one node replicates from
//!   the other (IO and SQL threads running) at an equal GTID position,
//!   `never` within the wait;
//! - `amqp_confirmed_lost`: messages the broker confirmed that the queue
//!   no longer held afterwards; `publish_gap_s`: the longest time between
//!   two confirms (and from the last one to the publisher's stop); `-`
//!   without a publisher. In a plan with a span where no node may serve
//!   (see `no_quorum_serving_max`) it is counted up to the first span only
//!   (an outage by design is no stall), and `publish_resumed_s` says when
//!   the first confirm came after the last span ended (the heal: a boot);
//! - `vip_released_s`: seconds from the fault until the node that held the
//!   VIP at the fault, once seen without quorum, no longer holds it; `-`
//!   where that node never lost quorum, `never` where it kept the VIP;
//! - `no_quorum_serving_max` (only in plans with a span where no node may
//!   have quorum, e.g. a lone node after the arbiter and its peer died):
//!   the most nodes writable or holding the VIP in one round of that span,
//!   after [`VIP_RELEASE_WINDOW`].
//!
//! Pass ([`Report::violations`], issue 17 point 6): `lost=0` and
//! `amqp_confirmed_lost=0`; `writable_primaries_max<=1` in every round (a
//! node counts only when its probe insert committed within the sampling
//! period, see `sampler::WRITABLE_WITHIN`); `vip_holders_max<=1` counted
//! outside the [`VIP_RELEASE_WINDOW`] after each fault; `converged_s<=30`;
//! `publish_gap_s<=10`; `no_quorum_serving_max=0`.
//!
//! Pure: no I/O, unit-tested below.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use crate::sampler::Round;
use crate::writer::{Invocation, Outcome};

/// How long after a fault two VIP holders are tolerated: the time for the
/// side that lost quorum to notice (corosync token 500 ms + consensus
/// 250 ms) and for pacemaker to stop its resources (no-quorum-policy=stop:
/// demote MariaDB, stop IPaddr2; a promote or demote took about 0.2 s in
/// the pair). 10 s is several times that on two loaded cores, and what
/// `vip_released_s` measures is printed beside it.
pub const VIP_RELEASE_WINDOW: Duration = Duration::from_secs(10);

/// Convergence must come within this after the heal (issue 17).
pub const CONVERGE_WITHIN_S: f64 = 30.0;

/// When the faults happened, for the rules that depend on it.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The start of each fault (a plan may inject several).
    pub faults: Vec<Instant>,
    /// Spans in which no node may be writable or hold the VIP (a lone
    /// node without quorum), from their start + [`VIP_RELEASE_WINDOW`].
    pub must_not_serve: Vec<(Instant, Instant)>,
}

/// A replica's threads and source, from `SHOW SLAVE STATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    pub master_host: String,
    pub io: bool,
    pub sql: bool,
}

/// One node at the end of a scenario.
#[derive(Debug, Clone, Default)]
pub struct FinalNode {
    pub name: String,
    pub address: String,
    pub alive: bool,
    pub vip: bool,
    pub read_only: Option<bool>,
    /// `@@global.gtid_current_pos`.
    pub gtid: Option<String>,
    pub replica: Option<ReplicaState>,
    /// Ids in the writers' table (`None`: could not be read).
    pub ids: Option<BTreeSet<u64>>,
}

impl FinalNode {
    fn is_source_of(&self, r: &ReplicaState) -> bool {
        r.master_host == self.name || r.master_host == self.address
    }
}

/// One node replicates from the other with IO and SQL threads running,
/// and both are at the same GTID position.
pub fn converged(nodes: &[FinalNode]) -> bool {
    let [a, b] = nodes else { return false };
    if !(a.alive && b.alive) {
        return false;
    }
    let replicates = |r: &FinalNode, src: &FinalNode| {
        r.replica
            .as_ref()
            .is_some_and(|s| s.io && s.sql && src.is_source_of(s))
    };
    let equal = matches!((&a.gtid, &b.gtid), (Some(x), Some(y)) if !x.trim().is_empty() && x.trim() == y.trim());
    equal && (replicates(a, b) || replicates(b, a))
}

/// The node whose rows count: the live, writable node the other replicates
/// from; else the live, writable VIP holder; else any live writable node;
/// else the live VIP holder. The first by name where several qualify.
pub fn final_primary(nodes: &[FinalNode]) -> Option<&FinalNode> {
    let live: Vec<&FinalNode> = nodes.iter().filter(|n| n.alive).collect();
    let writable = |n: &&FinalNode| n.read_only == Some(false);
    let source = live.iter().copied().filter(writable).find(|p| {
        live.iter().any(|r| {
            r.name != p.name
                && r.replica
                    .as_ref()
                    .is_some_and(|s| s.io && p.is_source_of(s))
        })
    });
    source
        .or_else(|| live.iter().copied().filter(writable).find(|n| n.vip))
        .or_else(|| live.iter().copied().find(writable))
        .or_else(|| live.iter().copied().find(|n| n.vip))
}

/// What the AMQP publisher did and what the queue held afterwards.
#[derive(Debug, Clone)]
pub struct AmqpRun {
    pub started: Instant,
    pub stopped: Instant,
    /// Confirmed ids with the time each confirm arrived.
    pub confirmed: Vec<(u64, Instant)>,
    pub published: usize,
    /// Ids read back from the queue afterwards (`None`: could not drain).
    pub consumed: Option<BTreeSet<u64>>,
}

/// The longest time without a confirm: between two confirms, and from the
/// last one to the stop (a publisher that never recovers has its whole
/// outage counted); the whole run without any confirm.
pub fn publish_gap(a: &AmqpRun) -> f64 {
    publish_gap_until(a, a.stopped)
}

/// [`publish_gap`] of the confirms before `end`, the tail counted to `end`.
pub fn publish_gap_until(a: &AmqpRun, end: Instant) -> f64 {
    let end = end.min(a.stopped);
    let mut at: Vec<Instant> = a
        .confirmed
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t <= end)
        .collect();
    at.sort();
    let Some(last) = at.last() else {
        return end.saturating_duration_since(a.started).as_secs_f64();
    };
    let tail = end.saturating_duration_since(*last).as_secs_f64();
    at.windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .fold(tail, f64::max)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub acked: usize,
    pub lost: usize,
    /// Up to 20 lost ids (for the log).
    pub lost_ids: Vec<u64>,
    pub writable_primaries_max: usize,
    pub vip_holders_max: usize,
    pub converged_s: Option<f64>,
    pub amqp_confirmed_lost: Option<usize>,
    pub publish_gap_s: Option<f64>,
    pub final_primary: Option<String>,
    /// Per stream: (name, acked, failed, unknown).
    pub streams: Vec<(String, usize, usize, usize)>,
    pub amqp_published: Option<usize>,
    pub amqp_confirmed: Option<usize>,
    /// The most VIP holders in one round, the tolerated windows included.
    pub vip_holders_raw_max: usize,
    /// `None`: not applicable; `Some(None)`: never released.
    pub vip_released_s: Option<Option<f64>>,
    /// `None` where the plan has no must-not-serve span.
    pub no_quorum_serving_max: Option<usize>,
    /// Plans with a must-not-serve span: seconds from its end to the
    /// first confirm after it (`Some(None)`: none came).
    pub publish_resumed_s: Option<Option<f64>>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dash = || "-".to_string();
        write!(
            f,
            "scenario={} acked={} lost={} writable_primaries_max={} vip_holders_max={} converged_s={} amqp_confirmed_lost={} publish_gap_s={}",
            self.scenario,
            self.acked,
            self.lost,
            self.writable_primaries_max,
            self.vip_holders_max,
            self.converged_s
                .map_or_else(|| "never".to_string(), |s| format!("{s:.1}")),
            self.amqp_confirmed_lost.map_or_else(dash, |n| n.to_string()),
            self.publish_gap_s.map_or_else(dash, |g| format!("{g:.1}")),
        )?;
        write!(
            f,
            " vip_released_s={}",
            match self.vip_released_s {
                None => dash(),
                Some(None) => "never".to_string(),
                Some(Some(s)) => format!("{s:.1}"),
            }
        )?;
        if let Some(n) = self.no_quorum_serving_max {
            write!(f, " no_quorum_serving_max={n}")?;
        }
        if let Some(r) = self.publish_resumed_s {
            write!(
                f,
                " publish_resumed_s={}",
                r.map_or_else(|| "never".to_string(), |s| format!("{s:.1}"))
            )?;
        }
        Ok(())
    }
}

impl Report {
    /// Issue 17's acceptance: what a partition-safe pair must show.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.lost != 0 {
            v.push(format!(
                "lost={} acknowledged inserts missing on the final primary {} (e.g. {:?})",
                self.lost,
                self.final_primary.as_deref().unwrap_or("(none)"),
                self.lost_ids
            ));
        }
        match self.amqp_confirmed_lost {
            Some(0) => {}
            Some(n) => v.push(format!(
                "amqp_confirmed_lost={n} confirmed messages not in the queue"
            )),
            None => v.push("amqp_confirmed_lost=- (the queue could not be read back)".into()),
        }
        if self.writable_primaries_max > 1 {
            v.push(format!(
                "writable_primaries_max={} nodes writable at once",
                self.writable_primaries_max
            ));
        }
        if self.vip_holders_max > 1 {
            v.push(format!(
                "vip_holders_max={} nodes held the VIP at once more than {} s after a fault",
                self.vip_holders_max,
                VIP_RELEASE_WINDOW.as_secs()
            ));
        }
        match self.converged_s {
            Some(c) if c <= CONVERGE_WITHIN_S => {}
            Some(c) => v.push(format!(
                "converged_s={c:.1} > {CONVERGE_WITHIN_S} s after the heal"
            )),
            None => v.push("converged_s=never: no replica at the primary's GTID".into()),
        }
        if let Some(n) = self.no_quorum_serving_max.filter(|n| *n > 0) {
            v.push(format!(
                "no_quorum_serving_max={n}: a node without quorum was writable or held the VIP"
            ));
        }
        match self.publish_gap_s {
            Some(g) if g <= 10.0 => {}
            Some(g) => v.push(format!("publish_gap_s={g:.1} > 10 s without a confirm")),
            None => v.push("publish_gap_s=- (no publisher)".into()),
        }
        v
    }
}

/// From the fault to the VIP released by the node that held it at the
/// fault, once that node was seen without quorum. A holder that stops
/// answering (power cut) before it is seen without quorum released
/// nothing: its boot later, without quorum and without the VIP, is not a
/// release; one that lost quorum and went down still holding the VIP
/// never released it.
pub fn vip_released(rounds: &[Round], fault: Instant) -> Option<Option<f64>> {
    let before = rounds.iter().rev().find(|r| r.at < fault)?;
    let holder = before.nodes.iter().find(|n| n.vip)?.name.clone();
    let mut lost_quorum = false;
    for r in rounds.iter().filter(|r| r.at >= fault) {
        let Some(n) = r.nodes.iter().find(|n| n.name == holder) else {
            continue;
        };
        match n.quorate {
            None if lost_quorum => return Some(None),
            None => return None,
            Some(false) => lost_quorum = true,
            Some(true) => {}
        }
        if lost_quorum && !n.vip {
            return Some(Some(r.at.duration_since(fault).as_secs_f64()));
        }
    }
    lost_quorum.then_some(None)
}

/// The checker.
pub fn check(
    scenario: &str,
    history: &[Invocation],
    rounds: &[Round],
    timeline: &Timeline,
    end: &[FinalNode],
    converged_s: Option<f64>,
    amqp: Option<&AmqpRun>,
) -> Report {
    let acked: BTreeSet<u64> = history
        .iter()
        .filter(|i| i.attempt.outcome == Outcome::Acked)
        .map(|i| i.attempt.id)
        .collect();
    let primary = final_primary(end);
    let lost: Vec<u64> = match primary.and_then(|p| p.ids.as_ref()) {
        Some(ids) => acked.difference(ids).copied().collect(),
        None => acked.iter().copied().collect(),
    };
    let mut streams: Vec<(String, usize, usize, usize)> = Vec::new();
    for i in history {
        let ix = match streams.iter().position(|s| s.0 == i.stream) {
            Some(ix) => ix,
            None => {
                streams.push((i.stream.clone(), 0, 0, 0));
                streams.len() - 1
            }
        };
        let s = &mut streams[ix];
        match i.attempt.outcome {
            Outcome::Acked => s.1 += 1,
            Outcome::Failed => s.2 += 1,
            Outcome::Unknown => s.3 += 1,
        }
    }
    let max_of = |f: fn(&crate::sampler::NodeSample) -> bool| {
        rounds
            .iter()
            .map(|r| r.nodes.iter().filter(|n| f(n)).count())
            .max()
            .unwrap_or(0)
    };
    let in_window = |at: Instant| {
        timeline
            .faults
            .iter()
            .any(|f| at >= *f && at < *f + VIP_RELEASE_WINDOW)
    };
    let vip_count = |r: &Round| r.nodes.iter().filter(|n| n.vip).count();
    let vip_after_window = rounds
        .iter()
        .filter(|r| !in_window(r.at))
        .map(vip_count)
        .max()
        .unwrap_or(0);
    let no_quorum_serving_max = (!timeline.must_not_serve.is_empty()).then(|| {
        rounds
            .iter()
            .filter(|r| {
                timeline
                    .must_not_serve
                    .iter()
                    .any(|(a, b)| r.at >= *a + VIP_RELEASE_WINDOW && r.at <= *b)
            })
            .map(|r| r.nodes.iter().filter(|n| n.writable() || n.vip).count())
            .max()
            .unwrap_or(0)
    });
    Report {
        scenario: scenario.to_string(),
        acked: acked.len(),
        lost: lost.len(),
        lost_ids: lost.iter().take(20).copied().collect(),
        writable_primaries_max: max_of(|n| n.writable()),
        vip_holders_max: vip_after_window,
        vip_holders_raw_max: max_of(|n| n.vip),
        vip_released_s: timeline
            .faults
            .first()
            .and_then(|f| vip_released(rounds, *f)),
        no_quorum_serving_max,
        converged_s,
        amqp_confirmed_lost: amqp.and_then(|a| {
            let got = a.consumed.as_ref()?;
            Some(
                a.confirmed
                    .iter()
                    .filter(|(id, _)| !got.contains(id))
                    .count(),
            )
        }),
        publish_gap_s: amqp.map(
            |a| match timeline.must_not_serve.iter().map(|s| s.0).min() {
                Some(first) => publish_gap_until(a, first),
                None => publish_gap(a),
            },
        ),
        publish_resumed_s: match (amqp, timeline.must_not_serve.iter().map(|s| s.1).max()) {
            (Some(a), Some(end)) => Some(
                a.confirmed
                    .iter()
                    .map(|(_, t)| *t)
                    .filter(|t| *t >= end)
                    .min()
                    .map(|t| t.duration_since(end).as_secs_f64()),
            ),
            _ => None,
        },
        final_primary: primary.map(|p| p.name.clone()),
        streams,
        amqp_published: amqp.map(|a| a.published),
        amqp_confirmed: amqp.map(|a| a.confirmed.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::NodeSample;
    use crate::writer::Attempt;
    use std::time::Duration;

    fn op(t0: Instant, stream: &str, id: u64, at: f64, outcome: Outcome) -> Invocation {
        let started = t0 + Duration::from_secs_f64(at);
        Invocation {
            stream: stream.into(),
            attempt: Attempt {
                id,
                started,
                finished: started + Duration::from_millis(30),
                acked: outcome == Outcome::Acked,
                outcome,
            },
        }
    }

    fn node(name: &str, addr: &str) -> FinalNode {
        FinalNode {
            name: name.into(),
            address: addr.into(),
            alive: true,
            ..Default::default()
        }
    }

    /// A healthy end: c1 primary with the VIP, c2 replicating at equal GTID.
    fn healthy(ids: &[u64]) -> Vec<FinalNode> {
        let mut p = node("c1", "10.0.0.1");
        p.vip = true;
        p.read_only = Some(false);
        p.gtid = Some("0-1-42".into());
        p.ids = Some(ids.iter().copied().collect());
        let mut r = node("c2", "10.0.0.2");
        r.read_only = Some(true);
        r.gtid = Some("0-1-42".into());
        r.replica = Some(ReplicaState {
            master_host: "c1".into(),
            io: true,
            sql: true,
        });
        r.ids = Some(ids.iter().copied().collect());
        vec![p, r]
    }

    fn round(t0: Instant, at: f64, cells: &[(&str, bool, bool)]) -> Round {
        Round {
            at: t0 + Duration::from_secs_f64(at),
            nodes: cells
                .iter()
                .map(|(n, w, v)| NodeSample {
                    name: (*n).into(),
                    read_only: Some(!w),
                    write_ok: *w,
                    probe_ms: 20,
                    vip: *v,
                    quorate: Some(true),
                })
                .collect(),
        }
    }

    #[test]
    fn a_clean_run_passes_and_prints_the_line() {
        let t0 = Instant::now();
        let h = vec![
            op(t0, "vip", 1, 0.0, Outcome::Acked),
            op(t0, "c1", 1_000_001, 0.0, Outcome::Acked),
            op(t0, "c2", 2_000_001, 0.0, Outcome::Failed),
            op(t0, "vip", 2, 0.2, Outcome::Unknown),
        ];
        let rounds = vec![
            round(t0, 0.0, &[("c1", true, true), ("c2", false, false)]),
            round(t0, 1.0, &[("c1", true, true), ("c2", false, false)]),
        ];
        let amqp = AmqpRun {
            started: t0,
            stopped: t0 + Duration::from_secs(3),
            confirmed: (1..=10)
                .map(|i| (i, t0 + Duration::from_millis(200 * i)))
                .collect(),
            published: 10,
            consumed: Some((1..=10).collect()),
        };
        let r = check(
            "calm",
            &h,
            &rounds,
            &Timeline::default(),
            &healthy(&[1, 1_000_001, 2]),
            Some(1.24),
            Some(&amqp),
        );
        assert_eq!(
            r.to_string(),
            "scenario=calm acked=2 lost=0 writable_primaries_max=1 vip_holders_max=1 converged_s=1.2 amqp_confirmed_lost=0 publish_gap_s=1.0 vip_released_s=-"
        );
        assert!(r.violations().is_empty(), "{:?}", r.violations());
        assert_eq!(r.final_primary.as_deref(), Some("c1"));
        assert_eq!(
            r.streams,
            vec![
                ("vip".to_string(), 1, 0, 1),
                ("c1".to_string(), 1, 0, 0),
                ("c2".to_string(), 0, 1, 0)
            ]
        );
    }

    #[test]
    fn split_brain_loses_writes_and_fails_every_assertion() {
        let t0 = Instant::now();
        // both sides acknowledged during the cut; the final primary c1 has
        // only its own side's rows
        let h = vec![
            op(t0, "vip", 1, 0.0, Outcome::Acked),
            op(t0, "c1", 1_000_001, 5.0, Outcome::Acked),
            op(t0, "c2", 2_000_001, 5.0, Outcome::Acked),
            op(t0, "c2", 2_000_002, 5.2, Outcome::Acked),
        ];
        let rounds = vec![
            round(t0, 0.0, &[("c1", true, true), ("c2", false, false)]),
            round(t0, 5.0, &[("c1", true, true), ("c2", true, true)]),
        ];
        let mut end = healthy(&[1, 1_000_001]);
        // c2's replication broke on the diverged GTIDs
        end[1].gtid = Some("0-2-40".into());
        end[1].replica = Some(ReplicaState {
            master_host: "10.0.0.1".into(),
            io: false,
            sql: true,
        });
        let amqp = AmqpRun {
            started: t0,
            stopped: t0 + Duration::from_secs(60),
            confirmed: vec![
                (1, t0 + Duration::from_secs(1)),
                (2, t0 + Duration::from_secs(48)),
            ],
            published: 250,
            consumed: Some([1].into_iter().collect()),
        };
        let r = check(
            "cut",
            &h,
            &rounds,
            &Timeline::default(),
            &end,
            None,
            Some(&amqp),
        );
        assert_eq!(
            r.to_string(),
            "scenario=cut acked=4 lost=2 writable_primaries_max=2 vip_holders_max=2 converged_s=never amqp_confirmed_lost=1 publish_gap_s=47.0 vip_released_s=-"
        );
        assert_eq!(r.lost_ids, vec![2_000_001, 2_000_002]);
        let v = r.violations();
        // lost, amqp lost, W=2, V=2 (no fault window to excuse it),
        // never converged, the gap
        assert_eq!(v.len(), 6, "{v:?}");
        assert!(v[0].starts_with("lost=2 "), "{v:?}");
    }

    #[test]
    fn without_publisher_the_amqp_fields_are_dashes_and_count_as_failures() {
        let r = check(
            "x",
            &[],
            &[],
            &Timeline::default(),
            &healthy(&[]),
            Some(0.0),
            None,
        );
        assert!(
            r.to_string().ends_with(
                "converged_s=0.0 amqp_confirmed_lost=- publish_gap_s=- vip_released_s=-"
            ),
            "{r}"
        );
        assert_eq!(r.violations().len(), 2, "{:?}", r.violations());
    }

    #[test]
    fn an_outage_by_design_is_no_publish_gap_and_the_resume_is_reported() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let a = AmqpRun {
            started: t0,
            stopped: t0 + s(100),
            confirmed: vec![
                (1, t0 + s(1)),
                (2, t0 + s(3)),
                (3, t0 + s(75)),
                (4, t0 + s(76)),
            ],
            published: 4,
            consumed: None,
        };
        let tl = Timeline {
            faults: vec![t0 + s(4)],
            must_not_serve: vec![(t0 + s(5), t0 + s(60))],
        };
        let r = check("x", &[], &[], &tl, &healthy(&[]), None, Some(&a));
        // 3 -> 5 (the span's start), not 3 -> 75
        assert!(
            r.publish_gap_s.is_some_and(|g| (g - 2.0).abs() < 1e-6),
            "{r}"
        );
        assert_eq!(r.publish_resumed_s, Some(Some(15.0)));
        assert!(r.to_string().contains("publish_resumed_s=15.0"), "{r}");
        // without the span the same run stalled 72 s
        let r = check(
            "x",
            &[],
            &[],
            &Timeline::default(),
            &healthy(&[]),
            None,
            Some(&a),
        );
        assert!(
            r.publish_gap_s.is_some_and(|g| (g - 72.0).abs() < 1e-6),
            "{r}"
        );
        assert_eq!(r.publish_resumed_s, None);
    }

    #[test]
    fn publish_gap_counts_the_tail_and_a_run_without_confirms() {
        let t0 = Instant::now();
        let mut a = AmqpRun {
            started: t0,
            stopped: t0 + Duration::from_secs(30),
            confirmed: vec![
                (1, t0 + Duration::from_secs(1)),
                (2, t0 + Duration::from_secs(3)),
            ],
            published: 2,
            consumed: None,
        };
        assert!((publish_gap(&a) - 27.0).abs() < 1e-6);
        a.confirmed.clear();
        assert!((publish_gap(&a) - 30.0).abs() < 1e-6);
        let r = check(
            "x",
            &[],
            &[],
            &Timeline::default(),
            &healthy(&[]),
            None,
            Some(&a),
        );
        assert!(
            r.to_string()
                .contains("amqp_confirmed_lost=- publish_gap_s=30.0"),
            "{r}"
        );
    }

    #[test]
    fn convergence_needs_running_threads_from_the_peer_at_equal_gtid() {
        assert!(converged(&healthy(&[])));
        let mut n = healthy(&[]);
        n[1].gtid = Some("0-1-41".into());
        assert!(!converged(&n), "replica behind");
        let mut n = healthy(&[]);
        if let Some(r) = n[1].replica.as_mut() {
            r.sql = false;
        }
        assert!(!converged(&n), "SQL thread stopped");
        let mut n = healthy(&[]);
        n[1].replica = None;
        assert!(
            !converged(&n),
            "two primaries at equal GTID do not replicate"
        );
        let mut n = healthy(&[]);
        if let Some(r) = n[1].replica.as_mut() {
            r.master_host = "10.0.0.1".into();
        }
        assert!(converged(&n), "source by address");
        let mut n = healthy(&[]);
        n[0].alive = false;
        assert!(!converged(&n), "a dead node");
        assert!(!converged(&healthy(&[])[..1]), "one node");
    }

    #[test]
    fn final_primary_is_the_source_then_the_writable_vip_holder() {
        let n = healthy(&[]);
        assert_eq!(final_primary(&n).map(|p| p.name.as_str()), Some("c1"));
        // split brain, neither replicates: the writable VIP holder
        let mut n = healthy(&[]);
        n[1].replica = None;
        n[1].read_only = Some(false);
        n[0].vip = false;
        n[1].vip = true;
        assert_eq!(final_primary(&n).map(|p| p.name.as_str()), Some("c2"));
        // the source is dead: the survivor
        let mut n = healthy(&[]);
        n[0].alive = false;
        n[1].replica = None;
        n[1].read_only = Some(false);
        assert_eq!(final_primary(&n).map(|p| p.name.as_str()), Some("c2"));
        // nobody writable, nobody with the VIP: no primary, every ack lost
        let mut n = healthy(&[]);
        n[0].read_only = Some(true);
        n[0].vip = false;
        assert!(final_primary(&n).is_none());
        let t0 = Instant::now();
        let r = check(
            "x",
            &[op(t0, "vip", 7, 0.0, Outcome::Acked)],
            &[],
            &Timeline::default(),
            &n,
            None,
            None,
        );
        assert_eq!((r.acked, r.lost), (1, 1));
    }

    fn quorum(mut r: Round, name: &str, q: bool) -> Round {
        for n in r.nodes.iter_mut().filter(|n| n.name == name) {
            n.quorate = Some(q);
        }
        r
    }

    #[test]
    fn two_vip_holders_pass_inside_the_release_window_only() {
        let t0 = Instant::now();
        let fault = t0 + Duration::from_secs(10);
        let both = |at| round(t0, at, &[("c1", false, true), ("c2", true, true)]);
        let mut rounds = vec![
            round(t0, 9.0, &[("c1", true, true), ("c2", false, false)]),
            quorum(both(11.0), "c1", false),
            quorum(both(19.5), "c1", false),
            quorum(
                round(t0, 20.5, &[("c1", false, false), ("c2", true, true)]),
                "c1",
                false,
            ),
        ];
        let tl = Timeline {
            faults: vec![fault],
            must_not_serve: vec![],
        };
        let r = check("w", &[], &rounds, &tl, &healthy(&[]), Some(3.0), None);
        assert_eq!((r.vip_holders_max, r.vip_holders_raw_max), (1, 2));
        assert_eq!(
            r.writable_primaries_max, 1,
            "a read-only VIP holder is not writable"
        );
        assert_eq!(r.vip_released_s.flatten().map(|s| s.round()), Some(11.0));
        assert!(r.to_string().contains(" vip_released_s=10.5"), "{r}");
        // still two holders after the window: a violation
        rounds.push(both(21.0));
        let r = check("w", &[], &rounds, &tl, &healthy(&[]), Some(3.0), None);
        assert_eq!(r.vip_holders_max, 2);
        assert!(
            r.violations()
                .iter()
                .any(|v| v.starts_with("vip_holders_max=2")),
            "{:?}",
            r.violations()
        );
    }

    #[test]
    fn vip_release_applies_only_to_a_holder_that_lost_quorum() {
        let t0 = Instant::now();
        let fault = t0 + Duration::from_secs(5);
        // the holder kept quorum (the other side lost it): not applicable
        let rounds = vec![
            round(t0, 4.0, &[("c1", true, true), ("c2", false, false)]),
            quorum(
                round(t0, 6.0, &[("c1", true, true), ("c2", false, false)]),
                "c2",
                false,
            ),
        ];
        assert_eq!(vip_released(&rounds, fault), None);
        // the holder lost quorum and kept the VIP: never
        let rounds = vec![
            round(t0, 4.0, &[("c1", true, true), ("c2", false, false)]),
            quorum(
                round(t0, 6.0, &[("c1", true, true), ("c2", false, false)]),
                "c1",
                false,
            ),
        ];
        assert_eq!(vip_released(&rounds, fault), Some(None));
        let tl = Timeline {
            faults: vec![fault],
            must_not_serve: vec![],
        };
        let r = check("n", &[], &rounds, &tl, &healthy(&[]), Some(1.0), None);
        assert!(r.to_string().contains(" vip_released_s=never"), "{r}");
        // the holder was power-cut (not answering), then booted without
        // quorum and without the VIP: that boot is no release
        let mut down = round(t0, 6.0, &[("c1", false, false), ("c2", false, false)]);
        for n in down.nodes.iter_mut().filter(|n| n.name == "c1") {
            n.quorate = None;
        }
        let rounds = vec![
            round(t0, 4.0, &[("c1", true, true), ("c2", false, false)]),
            down,
            quorum(
                round(t0, 50.0, &[("c1", false, false), ("c2", false, false)]),
                "c1",
                false,
            ),
        ];
        assert_eq!(vip_released(&rounds, fault), None);
    }

    #[test]
    fn a_lone_node_without_quorum_must_not_serve() {
        let t0 = Instant::now();
        let lone = t0 + Duration::from_secs(20);
        let tl = Timeline {
            faults: vec![t0 + Duration::from_secs(5), lone],
            must_not_serve: vec![(lone, lone + Duration::from_secs(30))],
        };
        let quiet = |at| round(t0, at, &[("c1", false, false), ("c2", false, false)]);
        // within the release window it may still serve
        let mut rounds = vec![
            round(t0, 21.0, &[("c1", false, false), ("c2", true, true)]),
            quiet(31.0),
            quiet(49.0),
        ];
        let r = check("d", &[], &rounds, &tl, &healthy(&[]), Some(5.0), None);
        assert_eq!(r.no_quorum_serving_max, Some(0));
        assert!(r.to_string().ends_with(" no_quorum_serving_max=0"), "{r}");
        assert!(!r.violations().iter().any(|v| v.contains("no_quorum")));
        rounds.push(round(
            t0,
            45.0,
            &[("c1", false, false), ("c2", true, false)],
        ));
        let r = check("d", &[], &rounds, &tl, &healthy(&[]), Some(5.0), None);
        assert_eq!(r.no_quorum_serving_max, Some(1));
        assert!(r
            .violations()
            .iter()
            .any(|v| v.starts_with("no_quorum_serving_max=1")));
        // after the span, serving is fine again
        let plain = check(
            "e",
            &[],
            &[],
            &Timeline::default(),
            &healthy(&[]),
            Some(5.0),
            None,
        );
        assert_eq!(plain.no_quorum_serving_max, None);
        assert!(!plain.to_string().contains("no_quorum"), "{plain}");
    }

    #[test]
    fn convergence_after_thirty_seconds_or_never_fails() {
        let at =
            |c| check("c", &[], &[], &Timeline::default(), &healthy(&[]), c, None).violations();
        assert!(!at(Some(30.0)).iter().any(|v| v.starts_with("converged_s")));
        assert!(at(Some(30.1))
            .iter()
            .any(|v| v.starts_with("converged_s=30.1 > 30")));
        assert!(at(None).iter().any(|v| v.starts_with("converged_s=never")));
    }
}
