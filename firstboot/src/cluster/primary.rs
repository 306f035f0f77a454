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
//! itself would have set (`master-mariadb`, transient). (When only some
//! nodes have no GTID — one datadir reinstalled during a full outage — the
//! most advanced of the others gets it: the agent would wait forever.) Pacemaker promotes
//! it; the agent's post-promote notification points the other node at it
//! with `MASTER_USE_GTID=current_pos`, which on an empty position replicates
//! the primary's binary log from its start. In every other case (a primary
//! exists, every node has a GTID) the agent's own election decides and
//! nothing is touched, so this never picks a node with less data.

use std::time::Instant;

use anyhow::{bail, Result};

use super::Deadlines;
use crate::pacemaker::render::{ids, CibParams};
use crate::pacemaker::state::ClusterState;
use crate::pacemaker::tools::ClusterTools;

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
    let mut positions = Vec::new();
    for n in &params.nodes {
        if tools.node_attribute(&n.name, &score)?.is_some() {
            let why = format!("{} has a promotion score; the agent elects", n.name);
            crate::log::info(&why);
            return Ok(Seeding::LeftToAgent(why));
        }
        positions.push((n.name.as_str(), tools.private_attribute(&n.name, &gtid)?));
    }
    let Some(chosen) = choose(&params.bootstrap, &positions) else {
        let why = "every node published its GTID position; the agent elects the most advanced";
        crate::log::info(why);
        return Ok(Seeding::LeftToAgent(why.into()));
    };
    crate::log::info(&match positions.iter().any(|(_, p)| p.is_some()) {
        false => format!("fresh pair (no GTID anywhere): naming {chosen} the first MariaDB primary"),
        true => format!(
            "a node with an empty datadir blocks the agent's election: naming {chosen}, the most advanced node, primary"
        ),
    });
    tools.set_node_attribute(&chosen, &score, PROMOTION_SCORE)?;
    Ok(Seeding::Seeded(chosen))
}

/// The node to promote when the agent cannot elect, or None when it can
/// (every node has a GTID). No GTID anywhere: the bootstrap node (all
/// datadirs equal). Some empty: the agent waits for them forever; an empty
/// position means no transaction at all, so the node with the highest
/// sequence number among the others loses nothing.
fn choose(bootstrap: &str, positions: &[(&str, Option<String>)]) -> Option<String> {
    if positions.iter().all(|(_, p)| p.is_some()) {
        return None;
    }
    // The agent compares the third field of the (first) GTID the same way.
    let seq = |p: &str| -> u64 {
        p.split(',')
            .next()
            .and_then(|g| g.split('-').nth(2))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    positions
        .iter()
        .filter_map(|(n, p)| p.as_deref().map(|p| (seq(p), *n)))
        .max()
        .map(|(_, n)| n.to_string())
        .or_else(|| Some(bootstrap.to_string()))
}

/// The first binary-logged transaction of a fresh pair, run on the new
/// primary: until the replica has applied one, its GTID position is empty
/// and the agent could not promote it if the primary failed before any
/// client wrote (its `set_gtid` refuses an empty position).
const FIRST_TRANSACTION: &str = "CREATE DATABASE IF NOT EXISTS nib;
CREATE TABLE IF NOT EXISTS nib.cluster (k VARCHAR(64) PRIMARY KEY, v VARCHAR(255) NOT NULL) ENGINE=InnoDB;
INSERT IGNORE INTO nib.cluster VALUES ('first_primary', @@hostname);
SELECT @@gtid_binlog_pos AS pos;
";

/// After [`seed_first_primary`] named this node: waits (bounded) until
/// pacemaker has promoted it, then writes [`FIRST_TRANSACTION`].
pub fn first_transaction(
    params: &CibParams,
    tools: &dyn ClusterTools,
    deadlines: Deadlines,
) -> Result<String> {
    let start = Instant::now();
    loop {
        let st = tools.crm_mon_xml().and_then(|x| ClusterState::parse(&x));
        if let Ok(st) = &st {
            if st.primaries() == [params.bootstrap.as_str()] {
                let out = tools.local_sql(FIRST_TRANSACTION)?;
                let pos = crate::pacemaker::tools::parse_batch(&out)
                    .pop()
                    .and_then(|mut row| row.remove("pos"))
                    .unwrap_or_default();
                crate::log::info(&format!(
                    "{} promoted; first transaction written (GTID {pos})",
                    params.bootstrap
                ));
                return Ok(pos);
            }
        }
        if start.elapsed() >= deadlines.primary {
            bail!(
                "{} was named first MariaDB primary but pacemaker did not promote it within {} s;                  `crm_mon -1` says why",
                params.bootstrap,
                deadlines.primary.as_secs()
            );
        }
        std::thread::sleep(deadlines.poll);
    }
}

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn fresh_pair_gets_the_bootstrap_node() {
        assert_eq!(
            choose("a", &[("a", None), ("b", None)]).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn an_empty_node_never_wins_over_data() {
        assert_eq!(
            choose("a", &[("a", None), ("b", Some("0-2-17".into()))]).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn all_positions_known_is_the_agents_job() {
        assert_eq!(
            choose(
                "a",
                &[("a", Some("0-1-5".into())), ("b", Some("0-1-9".into()))]
            ),
            None
        );
    }
}
