//! Making seeds (the `nib seed` side): one node's NoCloud files from the
//! pair's `cluster.toml`, and new role data with fresh secrets
//! (`nib cluster init`).

use std::io::Read;

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::role::{
    Arbiter, ArbiterSecrets, ClusterSection, ClusterSpec, Fencing, FencingMode, Node,
    RoleDataError, Secret, Secrets, Ssh, Vip,
};

/// The files of one node's seed.
#[derive(Clone, PartialEq, Eq)]
pub struct SeedFiles {
    pub meta_data: String,
    /// `#cloud-config` with the tree under `nib:` (holds secrets).
    pub user_data: String,
    pub network_config: Option<String>,
}

#[derive(Serialize)]
struct UserData<'a> {
    hostname: &'a str,
    nib: &'a ClusterSpec,
}

/// Render the seed of `node`. The spec must be valid; `instance_id`
/// defaults to one derived from the role data and the node, so a changed
/// cluster.toml re-provisions and an unchanged one does not.
pub fn seed_files(
    spec: &ClusterSpec,
    node: &str,
    instance_id: Option<&str>,
) -> Result<SeedFiles, RoleDataError> {
    let (pair, arbiter) = spec.validate_whole()?;
    // Each host's seed carries only what that host needs.
    let (name, address, own) = match (pair.node(node), &arbiter) {
        (Some(n), _) => (n.name.clone(), n.address, spec.for_controller()),
        (None, Some(a)) if a.name == node => (a.name.clone(), a.address, spec.for_arbiter()),
        _ => {
            return Err(RoleDataError::Invalid {
                source_name: "--node".into(),
                problems: vec![crate::role::Problem {
                    path: "node".into(),
                    message: format!(
                        "{node:?} matches no node (nodes: {})",
                        pair.nodes
                            .iter()
                            .map(|n| n.name.as_str())
                            .chain(arbiter.iter().map(|a| a.name.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }],
            })
        }
    };
    let yaml = serde_yaml::to_string(&UserData {
        hostname: &name,
        nib: &own,
    })
    .unwrap_or_default();
    let user_data = format!("#cloud-config\n# nib role data for {name} (holds secrets)\n{yaml}");
    let iid = match instance_id {
        Some(i) => i.to_string(),
        None => {
            let d = Sha256::new()
                .chain_update(name.as_bytes())
                .chain_update(b"\0")
                .chain_update(user_data.as_bytes())
                .finalize();
            format!("iid-nib-{}", &hex::encode(d)[..16])
        }
    };
    let meta_data = format!("instance-id: {iid}\nlocal-hostname: {name}\n");
    let network_config = pair.network.as_ref().map(|net| {
        let mut s = String::from("version: 2\nethernets:\n");
        s.push_str(&format!(
            "  {}:\n    addresses:\n      - {}/{}\n",
            net.interface, address, net.prefix
        ));
        if let Some(gw) = &net.gateway {
            s.push_str(&format!(
                "    routes:\n      - to: default\n        via: {gw}\n"
            ));
        }
        if !net.dns.is_empty() {
            s.push_str("    nameservers:\n      addresses:\n");
            for d in &net.dns {
                s.push_str(&format!("        - {d}\n"));
            }
        }
        s
    });
    Ok(SeedFiles {
        meta_data,
        user_data,
        network_config,
    })
}

/// Random bytes from the kernel.
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf)
}

/// A random string of `[A-Za-z0-9]` (rejection sampling: no modulo bias).
pub fn random_alnum(len: usize) -> Result<String> {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes(len * 2)? {
            if (b as usize) < CHARS.len() * 4 && out.len() < len {
                out.push(CHARS[b as usize % CHARS.len()] as char);
            }
        }
    }
    Ok(out)
}

/// New role data for `nodes` (name, address; the first is the bootstrap
/// node), with fresh secrets. Fencing is left for the operator to choose
/// (validation insists), so the result must be edited before use unless
/// `fencing` is given. With `arbiter` (name, address and its TLS material,
/// which `nib` makes) the file gets `[arbiter]` and `[secrets.arbiter]`.
pub fn init_spec(
    name: &str,
    nodes: &[(String, String)],
    vip: &str,
    interface: &str,
    fencing: Option<FencingMode>,
    arbiter: Option<(Arbiter, ArbiterSecrets)>,
) -> Result<ClusterSpec> {
    let (arbiter, arbiter_secrets) = arbiter.unzip();
    let authkey = random_bytes(256)?;
    Ok(ClusterSpec {
        cluster: ClusterSection {
            name: name.to_string(),
            bootstrap: nodes.first().map(|n| n.0.clone()).unwrap_or_default(),
        },
        node: nodes
            .iter()
            .enumerate()
            .map(|(i, (n, a))| Node {
                name: n.clone(),
                id: i as u32 + 1,
                address: a.clone(),
            })
            .collect(),
        arbiter,
        network: None,
        vip: Vip {
            address: vip.to_string(),
            interface: interface.to_string(),
        },
        fencing: Fencing {
            mode: fencing,
            device: Vec::new(),
            accept_split_brain: false,
        },
        secrets: Secrets {
            erlang_cookie: Secret::new(random_alnum(32)?),
            corosync_authkey: Secret::new(format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(authkey)
            )),
            mariadb_replication_password: Secret::new(random_alnum(32)?),
            rabbitmq_openstack_password: Secret::new(random_alnum(32)?),
            arbiter: arbiter_secrets,
        },
        ssh: Ssh::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::RoleData;

    const EXAMPLE: &str = include_str!("../../tests/fixtures/cluster.toml");

    #[test]
    fn seed_roundtrips_through_the_datasource_parser() {
        let spec = ClusterSpec::from_toml(EXAMPLE, "cluster.toml").expect("parse");
        let s = seed_files(&spec, "controller02", None).expect("seed");
        let again = seed_files(&spec, "controller02", None).expect("seed");
        assert_eq!(s.meta_data, again.meta_data, "instance-id is deterministic");
        let (iid, host) = crate::datasource::parse_meta_data(&s.meta_data, "m").expect("meta");
        assert!(iid.starts_with("iid-nib-"));
        let rd = RoleData::parse(&s.user_data, "user-data").expect("user-data");
        assert_eq!(rd.spec, spec);
        rd.validate(host.as_deref(), "user-data").expect("valid");
        assert!(s.network_config.expect("net").contains("198.18.0.12/24"));
        let other = seed_files(&spec, "controller01", None).expect("seed");
        assert_ne!(other.meta_data, s.meta_data);
    }

    #[test]
    fn init_makes_valid_distinct_secrets() {
        let nodes = vec![
            ("a1".to_string(), "10.0.0.1".to_string()),
            ("a2".to_string(), "10.0.0.2".to_string()),
        ];
        let init = || {
            init_spec(
                "c",
                &nodes,
                "10.0.0.10/24",
                "eth0",
                Some(FencingMode::None),
                None,
            )
            .expect("init")
        };
        let (mut s1, s2) = (init(), init());
        // mode "none" without an arbiter: refused until accepted
        let err = s1.validate().expect_err("split brain not accepted");
        assert!(err.to_string().contains("`fencing.mode`"), "{err}");
        s1.fencing.accept_split_brain = true;
        s1.validate().expect("valid");
        assert_ne!(s1.secrets.erlang_cookie, s2.secrets.erlang_cookie);
        let reparsed = ClusterSpec::from_toml(&s1.to_toml(), "x").expect("toml roundtrip");
        assert_eq!(reparsed, s1);
    }
}
