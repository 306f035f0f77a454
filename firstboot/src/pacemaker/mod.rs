//! Pacemaker as nib configures it: the CIB rendered from the pair
//! ([`render`]), compared with the live one ([`diff`]), the cluster tools
//! ([`tools`]), and what `crm_mon` and `corosync-quorumtool` say ([`state`],
//! [`quorum`]). Used by first boot (the initial CIB), `nib-firstboot
//! cluster` (the bootstrap node's apply) and `status`; none of them
//! depends on another.

pub mod diff;
pub mod quorum;
pub mod render;
pub mod state;
pub mod tools;

use std::path::Path;

use anyhow::{Context, Result};

use crate::fsutil::{Owner, Root};
use crate::role::pair::Pair;

pub use diff::{config_digest, plan, CibOp, ConfigDigest, Plan};
pub use render::{CibNode, CibParams, CibVip, FenceDevice, Fencing, Secret, Secrets};
pub use tools::{ClusterTools, SystemTools};

/// The MariaDB account the agent and the replica use (created by the
/// firstboot renderer's init SQL).
pub use crate::render::REPLICATION_USER;

/// The journal line when the role data accepts a split brain (fencing
/// off and no arbiter: never silent, firstboot/doc/HA.md, "Fencing").
/// `nib seed` and `status` show the same words.
pub use crate::role::pair::SPLIT_BRAIN_WARNING as NO_FENCING_WARNING;

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
        CibParams {
            nodes,
            bootstrap: pair.bootstrap.clone(),
            vip: CibVip {
                address: pair.vip.address,
                prefix: pair.vip.prefix,
                nic: pair.vip.interface.clone(),
            },
            fencing: pair.fencing.clone(),
            quorum_device: pair.arbiter.is_some(),
            replication_user: REPLICATION_USER.to_string(),
            replication_password: pair.secrets.mariadb_replication_password.clone(),
        }
    }
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
    fn new_maps_ipmi_devices() {
        let p = CibParams::new(&parse(include_str!(
            "../../../tests/fixtures/cib/cluster-ipmi.toml"
        )));
        let Fencing::Ipmi(devices) = &p.fencing else {
            panic!("fencing is ipmi: {:?}", p.fencing);
        };
        let got: Vec<_> = devices
            .iter()
            .map(|d| (d.node.as_str(), d.address.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("controller01", "198.18.1.11"),
                ("controller02", "198.18.1.12")
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
