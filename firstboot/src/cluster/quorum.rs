//! Waiting, bounded, until corosync is quorate with every node of the pair
//! and pacemaker's CIB answers. Never forces quorum: with `two_node` and
//! `wait_for_all` a lone node at boot is not quorate, and that is right.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{bail, Result};

use super::render::CibParams;
use super::state::ClusterState;
use super::tools::ClusterTools;
use super::Deadlines;

/// What `corosync-quorumtool -s` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumView {
    pub quorate: bool,
    /// Node ids in the membership.
    pub members: BTreeSet<u32>,
}

/// Parses `corosync-quorumtool -s` (corosync 3.0 and 3.1 print the same).
pub fn parse_quorumtool(output: &str) -> QuorumView {
    let mut quorate = false;
    let mut members = BTreeSet::new();
    let mut in_members = false;
    for line in output.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Quorate:") {
            quorate = v.trim() == "Yes";
        } else if t.starts_with("Nodeid") {
            in_members = true;
        } else if in_members {
            match t.split_whitespace().next().map(str::parse::<u32>) {
                Some(Ok(id)) => {
                    members.insert(id);
                }
                _ => in_members = false,
            }
        }
    }
    QuorumView { quorate, members }
}

/// Polls until corosync is quorate with every node of `params` and
/// pacemaker shows a DC with every node online, or fails after
/// `deadlines.quorum` saying what was missing. "Online" in crm_mon means
/// the node finished pacemaker's join, which is when the DC has synced the
/// cluster's CIB to it: applying earlier would write to a node-local CIB
/// (empty after a reinstall) that the join then throws away.
pub fn wait(tools: &dyn ClusterTools, params: &CibParams, deadlines: Deadlines) -> Result<()> {
    let start = Instant::now();
    let want: BTreeSet<u32> = params.nodes.iter().map(|n| n.id).collect();
    let mut last;
    let mut announced = false;
    loop {
        match tools.quorum_status() {
            Ok(out) => {
                let view = parse_quorumtool(&out);
                let missing: Vec<String> =
                    want.difference(&view.members).map(u32::to_string).collect();
                if !view.quorate {
                    last = "corosync is not quorate".into();
                } else if !missing.is_empty() {
                    last = format!("node id(s) {} not in the membership", missing.join(", "));
                } else {
                    match tools.crm_mon_xml().and_then(|x| ClusterState::parse(&x)) {
                        Ok(st) => match pacemaker_missing(&st, params) {
                            None => {
                                crate::log::info(&format!(
                                    "quorate, pacemaker online on all {} nodes after {:.1} s",
                                    want.len(),
                                    start.elapsed().as_secs_f64()
                                ));
                                return Ok(());
                            }
                            Some(why) => last = why,
                        },
                        Err(e) => last = format!("pacemaker does not answer: {e:#}"),
                    }
                }
            }
            Err(e) => last = format!("corosync-quorumtool: {e:#}"),
        }
        if !announced {
            crate::log::info(&format!(
                "waiting up to {} s for corosync quorum with every node ({last})",
                deadlines.quorum.as_secs()
            ));
            announced = true;
        }
        if start.elapsed() >= deadlines.quorum {
            bail!(
                "no quorum with all {} nodes after {} s: {last}. Quorum is never forced; \
                 check that the other node is up and that corosync reaches it",
                want.len(),
                deadlines.quorum.as_secs()
            );
        }
        std::thread::sleep(deadlines.poll);
    }
}

/// Why pacemaker is not ready yet, or None when it is.
fn pacemaker_missing(st: &ClusterState, params: &CibParams) -> Option<String> {
    if st.dc.is_none() {
        return Some("pacemaker has not elected a DC yet".into());
    }
    let offline: Vec<&str> = params
        .nodes
        .iter()
        .filter(|n| !st.nodes.iter().any(|(name, up)| *up && *name == n.name))
        .map(|n| n.name.as_str())
        .collect();
    (!offline.is_empty()).then(|| format!("pacemaker: {} not online yet", offline.join(", ")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TWO: &str = "Quorum information\n------------------\nDate:             Fri Nov 27 22:43:44 2026\nQuorum provider:  corosync_votequorum\nNodes:            2\nNode ID:          1\nRing ID:          1.9\nQuorate:          Yes\n\nVotequorum information\n----------------------\nExpected votes:   2\nHighest expected: 2\nTotal votes:      2\nQuorum:           1  \nFlags:            2Node Quorate WaitForAll \n\nMembership information\n----------------------\n    Nodeid      Votes Name\n         1          1 controller01 (local)\n         2          1 controller02\n";

    #[test]
    fn parses_two_member_quorate_output() {
        let v = parse_quorumtool(TWO);
        assert!(v.quorate);
        assert_eq!(v.members, BTreeSet::from([1, 2]));
    }

    #[test]
    fn parses_lone_node_not_quorate() {
        let lone = TWO
            .replace("Quorate:          Yes", "Quorate:          No")
            .replace("         2          1 controller02\n", "");
        let v = parse_quorumtool(&lone);
        assert!(!v.quorate);
        assert_eq!(v.members, BTreeSet::from([1]));
    }
}
