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

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::datasource;
use crate::fsutil::{Owner, Root};
use crate::node_state::{self, NodeRecord};
use crate::role::pair::{self, Pair};

pub use diff::{config_digest, plan, CibOp, ConfigDigest, Plan};
pub use render::{CibNode, CibParams, CibVip, FenceDevice, Fencing, Secret, Secrets};
pub use tools::{ClusterTools, SystemTools};

/// The MariaDB account the agent and the replica use (created by the
/// firstboot renderer's init SQL).
pub use crate::render::REPLICATION_USER;

/// The journal line when the role data turns fencing off (never silent:
/// firstboot/doc/HA.md, "Fencing"). `status` shows the same words.
pub const NO_FENCING_WARNING: &str = "fencing is DISABLED (role data fencing.mode = \"none\"): \
a node that stops answering is not powered off, so after a network split both nodes may \
run the VIP and a writable MariaDB; set fencing.mode = \"ipmi\" with one device per node";

impl CibParams {
    /// The CIB parameters of the pair the role data describes.
    pub fn new(pair: &Pair) -> CibParams {
        let nodes = pair
            .nodes
            .iter()
            .map(|n| CibNode {
                name: n.name.clone(),
                id: n.id.get(),
                address: n.address,
            })
            .collect();
        let fencing = match &pair.fencing {
            pair::Fencing::Ipmi(devices) => Fencing::Ipmi(
                devices
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
            pair::Fencing::None => Fencing::None,
        };
        CibParams {
            nodes,
            bootstrap: pair.bootstrap.clone(),
            vip: CibVip {
                address: pair.vip.address,
                prefix: pair.vip.prefix,
                nic: pair.vip.interface.clone(),
            },
            fencing,
            replication_user: REPLICATION_USER.to_string(),
            replication_password: pair.secrets.mariadb_replication_password.clone(),
        }
    }
}

/// The pair and this node's name: from `seed` when given (validated like
/// `apply` does), else from the copy first boot recorded (node from its
/// record, else the hostname). Invalid role data is a `RoleDataError`
/// (exit 2).
pub fn load(seed: Option<&Path>) -> Result<(Pair, String)> {
    if let Some(dir) = seed {
        let (_rd, role) = datasource::parse_seed(&datasource::load_dir(dir)?)?;
        return Ok((role.pair, role.node.name));
    }
    let pair = node_state::recorded_pair(Path::new("/"))?;
    let node = NodeRecord::read(Path::new("/"))
        .node
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .context("cannot tell which node this is (no firstboot.json, no hostname)")?;
    Ok((pair, node))
}

/// `nib-firstboot cluster --print-cib`: the rendering for review.
pub fn print_cib(seed: Option<&Path>, show_secrets: bool) -> Result<String> {
    let (pair, _node) = load(seed)?;
    CibParams::new(&pair).render(if show_secrets {
        Secrets::Include
    } else {
        Secrets::Mask
    })
}

/// `nib-firstboot cluster`: what nib-cluster.service runs on every boot.
pub fn cluster_command(seed: Option<&Path>, deadlines: Deadlines) -> Result<Outcome> {
    let (pair, node) = load(seed)?;
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

/// The CIB a node's pacemaker starts from on its very first start:
/// everything nib renders, so pacemaker forms the cluster with
/// dc-deadtime=500ms and the resources already defined, instead of its 20 s
/// default followed by an apply. Identical on both nodes (same role data),
/// epoch 0: any CIB a running peer already has wins at join.
pub fn initial_cib(params: &CibParams) -> Result<String> {
    params.render(Secrets::Include)
}

/// pacemaker's own CIB file on a node.
pub const CIB_PATH: &str = "/var/lib/pacemaker/cib/cib.xml";

/// For `apply` (first boot, before pacemaker's first start): writes
/// [`initial_cib`] to [`CIB_PATH`] under `root` when pacemaker has never
/// written one, and returns whether it did. An existing CIB is pacemaker's
/// and is never touched (nib-cluster.service reconciles it instead).
/// Measured with the live test: cluster ready 12.6 s instead of 33.7 s,
/// because the first DC election no longer waits 20 s.
pub fn write_initial_cib(root: &Root, pair: &Pair) -> Result<bool> {
    if !wants_initial_cib(root)? {
        return Ok(false);
    }
    let rel = Path::new(CIB_PATH);
    let owner = Owner::new("hacluster", "haclient");
    let dir = rel.parent().context("CIB path has a parent")?;
    root.ensure_dir(dir, 0o750, &owner)?;
    let xml = initial_cib(&CibParams::new(pair))?;
    root.write_atomic(rel, xml.as_bytes(), 0o600, &owner)?;
    Ok(true)
}

/// Whether [`write_initial_cib`] would write: pacemaker is installed in
/// `root` (its hacluster user and haclient group exist) and has no CIB yet.
pub fn wants_initial_cib(root: &Root) -> Result<bool> {
    if root.ids(&Owner::new("hacluster", "haclient")).is_err() {
        return Ok(false);
    }
    Ok(!root.resolve(Path::new(CIB_PATH))?.exists())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::role::ClusterSpec;

    fn parse(text: &str) -> Pair {
        let spec = ClusterSpec::from_toml(text, "cluster.toml").expect("fixture parses");
        spec.validate().expect("fixture is valid")
    }

    fn example_pair() -> Pair {
        parse(include_str!("../../../tests/fixtures/cluster.toml"))
    }

    #[test]
    fn new_maps_the_example_cluster() {
        let p = CibParams::new(&example_pair());
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
    fn initial_cib_is_written_once_and_never_over_pacemakers() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        std::fs::write(
            etc.join("passwd"),
            format!("root:x:0:0::/root:/bin/sh\nhacluster:x:{me}:{gid}::/var/lib/pacemaker:/bin/false\n"),
        )
        .unwrap();
        std::fs::write(etc.join("group"), format!("root:x:0:\nhaclient:x:{gid}:\n")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let pair = example_pair();
        assert!(write_initial_cib(&root, &pair).unwrap());
        let path = dir.path().join(CIB_PATH.trim_start_matches('/'));
        let written = std::fs::read_to_string(&path).unwrap();
        let params = CibParams::new(&pair);
        assert_eq!(written, params.render(Secrets::Include).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        // Once pacemaker has a CIB, it is left alone.
        std::fs::write(&path, "<cib epoch=\"9\"/>").unwrap();
        assert!(!write_initial_cib(&root, &pair).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "<cib epoch=\"9\"/>"
        );
    }

    #[test]
    fn new_maps_ipmi_devices_with_lanplus() {
        let p = CibParams::new(&parse(include_str!(
            "../../../tests/fixtures/cib/cluster-ipmi.toml"
        )));
        let Fencing::Ipmi(devices) = &p.fencing else {
            panic!("fencing is ipmi: {:?}", p.fencing);
        };
        let got: Vec<_> = devices
            .iter()
            .map(|d| (d.node.as_str(), d.address.as_str(), d.lanplus))
            .collect();
        assert_eq!(
            got,
            [
                ("controller01", "198.18.1.11", true),
                ("controller02", "198.18.1.12", true)
            ]
        );
        assert_eq!(
            p.secrets(),
            [
                "k2K8vAjIlfbokOvfnNLWYPQf",
                "bmc-pw-one-TEST",
                "bmc-pw-two-TEST"
            ]
        );
    }
}
