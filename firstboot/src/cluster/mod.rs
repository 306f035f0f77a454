//! `nib-firstboot cluster`: turn the two booted nodes into one HA unit.
//!
//! Seeds 002 and 003 did this by hand (`crm configure …`, `pcs resource
//! create …`) on one node after both were up. Here the bootstrap node does
//! it on every boot: wait (bounded) until corosync is quorate with every
//! node, render the CIB, and apply with `cibadmin` only what differs from
//! the live CIB — so a second run, or a run on an already configured
//! cluster, writes nothing. On a fresh pair it then names the bootstrap
//! node as the first MariaDB primary (see [`primary`]).

pub mod diff;
pub mod primary;
pub mod quorum;
pub mod render;
pub mod state;
pub mod tools;

use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::role::{ClusterSpec, FencingMode};

pub use diff::{config_digest, plan, CibOp, ConfigDigest, Plan};
pub use render::{CibNode, CibParams, CibVip, FenceDevice, Fencing, Secret, Secrets};
pub use tools::{ClusterTools, SystemTools};

/// The MariaDB account the agent and the replica use; the firstboot
/// renderer creates it with the role data's replication password.
pub const REPLICATION_USER: &str = "nib_repl";

/// The journal line when the role data turns fencing off (HA-NOTES: never
/// silent). `status` shows the same words.
pub const NO_FENCING_WARNING: &str = "fencing is DISABLED (role data fencing.mode = \"none\"): \
a node that stops answering is not powered off, so after a network split both nodes may \
run the VIP and a writable MariaDB; set fencing.mode = \"ipmi\" with one device per node";

impl CibParams {
    /// The CIB parameters of the pair described by validated role data.
    /// Fails (naming the key) only on data that validation lets through but
    /// the CIB cannot carry.
    pub fn from_spec(spec: &ClusterSpec) -> Result<CibParams> {
        let nodes = spec
            .node
            .iter()
            .enumerate()
            .map(|(i, n)| {
                Ok(CibNode {
                    name: n.name.clone(),
                    id: n.id,
                    address: n.ip().ok_or_else(|| {
                        anyhow!(
                            "key `node[{i}].address`: {:?} is not an IP address",
                            n.address
                        )
                    })?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (address, prefix) = spec.vip.parsed().ok_or_else(|| {
            anyhow!(
                "key `vip.address`: {:?} is not ADDRESS/PREFIX",
                spec.vip.address
            )
        })?;
        let fencing = match spec.fencing.mode {
            Some(FencingMode::Ipmi) => Fencing::Ipmi(
                spec.fencing
                    .device
                    .iter()
                    .map(|d| FenceDevice {
                        node: d.node.clone(),
                        address: d.address.clone(),
                        username: d.username.clone(),
                        password: d.password.clone(),
                        lanplus: true,
                    })
                    .collect(),
            ),
            Some(FencingMode::None) => Fencing::None,
            None => {
                return Err(anyhow!(
                    "key `fencing.mode`: missing; say \"ipmi\" or, explicitly, \"none\""
                ))
            }
        };
        Ok(CibParams {
            nodes,
            bootstrap: spec.cluster.bootstrap.clone(),
            vip: CibVip {
                address,
                prefix,
                nic: spec.vip.interface.clone(),
            },
            fencing,
            replication_user: REPLICATION_USER.to_string(),
            replication_password: spec.secrets.mariadb_replication_password.clone(),
        })
    }
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
    if !params.fencing_enabled() {
        crate::log::warn(NO_FENCING_WARNING);
    }
    let expected: Vec<u32> = params.nodes.iter().map(|n| n.id).collect();
    quorum::wait(tools, &expected, deadlines)?;
    let changes = apply(params, tools)?;
    primary::seed_first_primary(params, tools, deadlines)?;
    Ok(if changes.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Applied(changes)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn example_spec() -> ClusterSpec {
        let text = include_str!("../../../tests/fixtures/cluster.toml");
        ClusterSpec::from_toml(text, "cluster.toml").expect("fixture parses")
    }

    #[test]
    fn from_spec_maps_the_example_cluster() {
        let p = CibParams::from_spec(&example_spec()).unwrap();
        assert_eq!(p.nodes.len(), 2);
        assert_eq!(p.nodes[0].name, "controller01");
        assert_eq!(p.nodes[1].address.to_string(), "198.18.0.12");
        assert_eq!(p.vip.address.to_string(), "198.18.0.10");
        assert_eq!(p.vip.prefix, 24);
        assert_eq!(p.vip.nic, "eth0");
        assert_eq!(p.bootstrap, "controller01");
        assert_eq!(p.fencing, Fencing::None);
        assert_eq!(p.replication_user, REPLICATION_USER);
    }

    #[test]
    fn from_spec_refuses_missing_fencing_mode() {
        let mut spec = example_spec();
        spec.fencing.mode = None;
        let err = CibParams::from_spec(&spec).unwrap_err();
        assert!(format!("{err}").contains("fencing.mode"), "{err}");
    }
}
