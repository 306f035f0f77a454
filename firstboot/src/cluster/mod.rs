//! `nib-firstboot cluster`: turn the two booted nodes into one HA unit.
//!
//! Seeds 002 and 003 did this by hand (`crm configure …`, `pcs resource
//! create …`) on one node after both were up. Here the bootstrap node does
//! it on every boot: wait (bounded) until corosync is quorate with every
//! node, render the CIB, and apply with `cibadmin` only what differs from
//! the live CIB — so a second run, or a run on an already configured
//! cluster, writes nothing. On a fresh pair it then names the bootstrap
//! node as the first MariaDB primary (see [`primary`]).

pub mod primary;
pub mod quorum;

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::node_state;
use crate::pacemaker::{
    plan, CibParams, ClusterTools, Plan, Secrets, SystemTools, NO_FENCING_WARNING,
};

/// `nib-firstboot cluster --print-cib`: the rendering for review.
pub fn print_cib(seed: Option<&Path>, show_secrets: bool) -> Result<String> {
    let (pair, _node) = node_state::load_pair(seed)?;
    CibParams::new(&pair).render(if show_secrets {
        Secrets::Include
    } else {
        Secrets::Mask
    })
}

/// `nib-firstboot cluster`: what nib-cluster.service runs on every boot.
pub fn cluster_command(seed: Option<&Path>, deadlines: Deadlines) -> Result<Outcome> {
    let (pair, node) = node_state::load_pair(seed)?;
    let params = CibParams::new(&pair);
    let tools = SystemTools::new(&params.secrets());
    let outcome = run(&params, &node, &tools, deadlines)?;
    match &outcome {
        Outcome::NotBootstrap { local, bootstrap } => crate::log::info(&format!(
            "nothing to do on {local}: the bootstrap node {bootstrap} applies the cluster configuration"
        )),
        Outcome::Unchanged => {
            crate::log::info("cluster configuration already in place; CIB unchanged")
        }
        Outcome::Applied(changes) => crate::log::info(&format!(
            "cluster configuration applied ({} change(s))",
            changes.len()
        )),
    }
    Ok(outcome)
}

/// How long each phase of `cluster` may take before it gives up.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// corosync quorate with every node, pacemaker's CIB answering.
    pub quorum: Duration,
    /// Both MariaDB instances started, so the first primary can be named.
    pub primary: Duration,
    /// Pause between two polls.
    pub poll: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            quorum: Duration::from_secs(600),
            primary: Duration::from_secs(300),
            poll: Duration::from_millis(500),
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This node is not the bootstrap node: nothing to do here.
    NotBootstrap { local: String, bootstrap: String },
    /// The CIB already carried the configuration.
    Unchanged,
    /// These differences were applied.
    Applied(Vec<String>),
}

/// Applies the rendered configuration to the live CIB through `tools`:
/// query, compare, run only the operations that differ. Returns the
/// differences (empty when nothing was written).
pub fn apply(params: &CibParams, tools: &dyn ClusterTools) -> Result<Vec<String>> {
    let desired = params.render(Secrets::Include)?;
    let current = tools.cib_query()?;
    let plan = plan(&desired, &current)?;
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    for change in &plan.changes {
        crate::log::info(&format!("cib: {change}"));
    }
    for op in &plan.ops {
        tools
            .cib_apply(op)
            .with_context(|| format!("applying the cluster configuration ({op:?})"))?;
    }
    // Read back: a second comparison must find nothing, or pacemaker
    // rewrote something and the next boot would write again.
    let after = plan_against_live(&desired, tools)?;
    if !after.is_empty() {
        return Err(anyhow!(
            "the CIB still differs after applying: {}",
            after.changes.join("; ")
        ));
    }
    Ok(plan.changes)
}

fn plan_against_live(desired: &str, tools: &dyn ClusterTools) -> Result<Plan> {
    plan(desired, &tools.cib_query()?)
}

/// The whole `nib-firstboot cluster` run for the node named `local`.
pub fn run(
    params: &CibParams,
    local: &str,
    tools: &dyn ClusterTools,
    deadlines: Deadlines,
) -> Result<Outcome> {
    if local != params.bootstrap {
        return Ok(Outcome::NotBootstrap {
            local: local.to_string(),
            bootstrap: params.bootstrap.clone(),
        });
    }
    if params.split_brain_possible() {
        crate::log::warn(NO_FENCING_WARNING);
    }
    quorum::wait(tools, params, deadlines)?;
    let changes = apply(params, tools)?;
    if let primary::Seeding::Seeded(node) = primary::seed_first_primary(params, tools, deadlines)? {
        // Only the bootstrap node's own MariaDB can be written from here.
        if node == params.bootstrap {
            primary::first_transaction(params, tools, deadlines)?;
        }
    }
    Ok(if changes.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Applied(changes)
    })
}
