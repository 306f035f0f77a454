//! The first MariaDB primary of a fresh pair.
//!
//! The `mariadb` agent elects a primary by GTID: each started instance
//! publishes `gtid_current_pos` and the node with the highest becomes
//! primary once every node has published. On a fresh pair both positions
//! are empty (the firstboot init SQL is not binary-logged, on purpose), the
//! agent's `set_gtid` refuses an empty position, and no primary is ever
//! elected. Seed 000 did this step by hand (dump + CHANGE MASTER).
//!
//! So, once both instances run unpromoted, nobody is primary, no promotion
//! score exists and no node has published a GTID — i.e. both datadirs are
//! fresh and equal — the bootstrap node gets the promotion score the agent
//! itself would have set (`master-mariadb`, transient). Pacemaker promotes
//! it; the agent's post-promote notification points the other node at it
//! with `MASTER_USE_GTID=current_pos`, which on an empty position replicates
//! the primary's binary log from its start. In every other case (a primary
//! exists, a GTID exists) the agent's own election decides and nothing is
//! touched, so this can never pick a node with less data.

use std::time::Instant;

use anyhow::{bail, Result};

use super::render::{ids, CibParams};
use super::state::ClusterState;
use super::tools::ClusterTools;
use super::Deadlines;

/// The agent's promotion score attribute (`crm_master`/`ocf_promotion_score`).
pub fn promotion_attribute() -> String {
    format!("master-{}", ids::MARIADB)
}

/// The agent's published GTID (`attrd_updater -p`).
pub fn gtid_attribute() -> String {
    format!("{}-gtid", ids::MARIADB)
}

/// The score the agent's own election gives its choice.
const PROMOTION_SCORE: &str = "100";

/// What the seeding found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seeding {
    AlreadyPrimary(String),
    /// Some node has a score or a GTID: the agent elects.
    LeftToAgent(String),
    Seeded(String),
}

/// Names the bootstrap node first primary on a fresh pair; see the module
/// docs. Bounded by `deadlines.primary`.
pub fn seed_first_primary(
    params: &CibParams,
    tools: &dyn ClusterTools,
    deadlines: Deadlines,
) -> Result<Seeding> {
    let start = Instant::now();
    let wanted = params.nodes.len();
    let mut last;
    loop {
        match tools.crm_mon_xml().and_then(|x| ClusterState::parse(&x)) {
            Ok(st) => {
                if let Some(p) = st.primaries().first() {
                    crate::log::info(&format!("MariaDB primary is {p}"));
                    return Ok(Seeding::AlreadyPrimary(p.to_string()));
                }
                let replicas = st.replicas();
                if replicas.len() >= wanted {
                    return decide(params, tools);
                }
                last = format!(
                    "{} of {wanted} MariaDB instances running ({})",
                    replicas.len(),
                    st.mariadb
                        .iter()
                        .map(|i| format!("{}: {}", i.node.as_deref().unwrap_or("-"), i.role))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Err(e) => last = format!("crm_mon: {e:#}"),
        }
        if start.elapsed() >= deadlines.primary {
            bail!(
                "MariaDB did not start on every node within {} s ({last}); no primary was named. \
                 `crm_mon -1` and the journal of pacemaker say why",
                deadlines.primary.as_secs()
            );
        }
        std::thread::sleep(deadlines.poll);
    }
}

fn decide(params: &CibParams, tools: &dyn ClusterTools) -> Result<Seeding> {
    let score = promotion_attribute();
    let gtid = gtid_attribute();
    for n in &params.nodes {
        if tools.node_attribute(&n.name, &score)?.is_some() {
            let why = format!("{} has a promotion score; the agent elects", n.name);
            crate::log::info(&why);
            return Ok(Seeding::LeftToAgent(why));
        }
        if let Some(pos) = tools.private_attribute(&n.name, &gtid)? {
            let why = format!(
                "{} has GTID position {pos}; the agent elects the most advanced node",
                n.name
            );
            crate::log::info(&why);
            return Ok(Seeding::LeftToAgent(why));
        }
    }
    crate::log::info(&format!(
        "fresh pair (no GTID anywhere): naming {} the first MariaDB primary",
        params.bootstrap
    ));
    tools.set_node_attribute(&params.bootstrap, &score, PROMOTION_SCORE)?;
    Ok(Seeding::Seeded(params.bootstrap.clone()))
}
