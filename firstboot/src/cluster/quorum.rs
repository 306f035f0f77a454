//! Waiting, bounded, until corosync is quorate with every node of the pair
//! and pacemaker's CIB answers. Never forces quorum: with `two_node` and
//! `wait_for_all` a lone node at boot is not quorate, and that is right.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{bail, Result};

use super::Deadlines;
use crate::pacemaker::quorum::parse_quorumtool;
use crate::pacemaker::render::CibParams;
use crate::pacemaker::state::ClusterState;
use crate::pacemaker::tools::ClusterTools;

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
