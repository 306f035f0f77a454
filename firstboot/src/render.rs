//! Renderers: role data + this node → the files that make it one of the pair.
//! One tera template per file (in `firstboot/templates/`, embedded), named
//! after the file it renders; RabbitMQ's definitions are JSON built with
//! serde_json so quoting is always right.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::fsutil::Owner;
use crate::role::pair::{Node, Pair};
use crate::role::{ArbiterRole, NodeRole};

/// The MariaDB account pacemaker's agent and the replica use (its password is
/// `secrets.mariadb_replication_password`).
pub const REPLICATION_USER: &str = "nib_repl";

/// Where the node's MariaDB lives (Debian and Ubuntu packaging): this
/// renderer writes its config there, `apply` initialises the datadir, and
/// the CIB tells the resource agent these paths.
pub mod mariadb_paths {
    pub const BINARY: &str = "/usr/bin/mysqld_safe";
    pub const CONFIG: &str = "/etc/mysql/my.cnf";
    pub const DATADIR: &str = "/var/lib/mysql";
    pub const PID: &str = "/run/mysqld/mysqld.pid";
    pub const SOCKET: &str = "/run/mysqld/mysqld.sock";
    /// In the datadir (MariaDB's own default place for it): the agent only
    /// touches this file, and bookworm's package no longer creates
    /// /var/log/mysql (it logs to the journal under systemd). The agent's
    /// start touches it only after nib-datadir.service has made the
    /// datadir, which must be empty until then.
    pub const LOG: &str = "/var/lib/mysql/mariadb.err";
}
/// The OpenStack messaging user (seed 000).
pub const RABBITMQ_USER: &str = "openstack";

/// One file to write on the node.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Absolute path on the node.
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
    pub owner: Owner,
    /// Holds a secret (or a value derived from one): never printed.
    pub secret: bool,
}

impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedFile")
            .field("path", &self.path)
            .field("bytes", &self.content.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .field("owner", &self.owner)
            .field("secret", &self.secret)
            .finish()
    }
}

const TEMPLATES: &[(&str, &str)] = &[
    ("hostname", include_str!("../templates/hostname.tera")),
    ("hosts", include_str!("../templates/hosts.tera")),
    (
        "10-nib-cluster.network",
        include_str!("../templates/10-nib-cluster.network.tera"),
    ),
    ("60-nib.cnf", include_str!("../templates/60-nib.cnf.tera")),
    (
        "nib-init.sql",
        include_str!("../templates/nib-init.sql.tera"),
    ),
    (
        "memcached.conf",
        include_str!("../templates/memcached.conf.tera"),
    ),
    (
        "nib-limits.conf",
        include_str!("../templates/nib-limits.conf.tera"),
    ),
    (
        "corosync.conf",
        include_str!("../templates/corosync.conf.tera"),
    ),
    (
        "rabbitmq-env.conf",
        include_str!("../templates/rabbitmq-env.conf.tera"),
    ),
    (
        "rabbitmq.conf",
        include_str!("../templates/rabbitmq.conf.tera"),
    ),
    (
        "authorized_keys",
        include_str!("../templates/authorized_keys.tera"),
    ),
];

fn tera() -> Result<tera::Tera> {
    let mut t = tera::Tera::default();
    // Plain-text configs: never HTML-escape.
    t.autoescape_on(vec![]);
    t.add_raw_templates(TEMPLATES.iter().copied())
        .context("loading embedded templates")?;
    Ok(t)
}

#[derive(Serialize)]
struct NodeCtx<'a> {
    name: &'a str,
    id: u32,
    address: String,
}

impl<'a> From<&'a Node> for NodeCtx<'a> {
    fn from(n: &'a Node) -> Self {
        NodeCtx {
            name: &n.name,
            id: n.id.get(),
            address: n.address.to_string(),
        }
    }
}

#[derive(Serialize)]
struct ClusterCtx<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct ArbiterCtx<'a> {
    name: &'a str,
    address: String,
}

/// `network` for the templates: every key present (the template tests
/// `network.gateway`).
fn network_ctx(net: &crate::role::pair::Network) -> serde_json::Value {
    serde_json::json!({
        "interface": net.interface,
        "prefix": net.prefix,
        "gateway": net.gateway.map(|g| g.to_string()).unwrap_or_default(),
        "dns": net.dns.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
    })
}

/// Render every file of this node.
pub fn render_node(role: &NodeRole) -> Result<Vec<RenderedFile>> {
    let pair = &role.pair;
    let node = &role.node;
    let t = tera()?;
    let mut ctx = tera::Context::new();
    ctx.insert("node", &NodeCtx::from(node));
    let nodes: Vec<NodeCtx> = pair.nodes.iter().map(NodeCtx::from).collect();
    ctx.insert("nodes", &nodes);
    ctx.insert("cluster", &ClusterCtx { name: &pair.name });
    let (amqp, any) = match node.address {
        IpAddr::V6(ip) => (format!("[{ip}]:5672"), "::"),
        IpAddr::V4(ip) => (format!("{ip}:5672"), "0.0.0.0"),
    };
    ctx.insert("amqp_listen", &amqp);
    ctx.insert("mariadb_bind", any);
    ctx.insert("repl_user", REPLICATION_USER);
    ctx.insert("keys", &role.authorized_keys);
    if let Some(net) = &pair.network {
        ctx.insert("network", &network_ctx(net));
    }
    // The qdevice heuristic checks for the VIP on its interface.
    ctx.insert(
        "vip",
        &serde_json::json!({
            "address": pair.vip.address.to_string(),
            "interface": pair.vip.interface,
        }),
    );
    if let Some(a) = &pair.arbiter {
        ctx.insert(
            "arbiter",
            &ArbiterCtx {
                name: &a.name,
                address: a.address.to_string(),
            },
        );
    }
    let r = |name: &str, ctx: &tera::Context| -> Result<Vec<u8>> {
        Ok(t.render(name, ctx)
            .with_context(|| format!("rendering {name}"))?
            .into_bytes())
    };
    let root = Owner::root();
    let file =
        |path: &str, content: Vec<u8>, mode: u32, owner: &Owner, secret: bool| RenderedFile {
            path: PathBuf::from(path),
            content,
            mode,
            owner: owner.clone(),
            secret,
        };

    let mut out = vec![
        file("/etc/hostname", r("hostname", &ctx)?, 0o644, &root, false),
        file("/etc/hosts", r("hosts", &ctx)?, 0o644, &root, false),
    ];
    if pair.network.is_some() {
        out.push(file(
            "/etc/systemd/network/10-nib-cluster.network",
            r("10-nib-cluster.network", &ctx)?,
            0o644,
            &root,
            false,
        ));
    }
    out.push(file(
        "/etc/mysql/mariadb.conf.d/60-nib.cnf",
        r("60-nib.cnf", &ctx)?,
        0o644,
        &root,
        false,
    ));
    {
        let mut c = ctx.clone();
        c.insert(
            "repl_password",
            pair.secrets.mariadb_replication_password.expose(),
        );
        // mariadbd (user mysql) reads its init_file
        out.push(file(
            "/etc/mysql/nib-init.sql",
            r("nib-init.sql", &c)?,
            0o640,
            &Owner::new("root", "mysql"),
            true,
        ));
    }
    out.push(file(
        "/etc/memcached.conf",
        r("memcached.conf", &ctx)?,
        0o644,
        &root,
        false,
    ));
    out.push(file(
        "/etc/systemd/system/memcached.service.d/nib-limits.conf",
        r("nib-limits.conf", &ctx)?,
        0o644,
        &root,
        false,
    ));
    out.push(file(
        "/etc/corosync/corosync.conf",
        r("corosync.conf", &ctx)?,
        0o644,
        &root,
        false,
    ));
    out.push(file(
        "/etc/corosync/authkey",
        pair.secrets.corosync_authkey.expose().to_vec(),
        0o400,
        &root,
        true,
    ));
    out.push(file(
        "/etc/rabbitmq/rabbitmq-env.conf",
        r("rabbitmq-env.conf", &ctx)?,
        0o644,
        &root,
        false,
    ));
    out.push(file(
        "/etc/rabbitmq/rabbitmq.conf",
        r("rabbitmq.conf", &ctx)?,
        0o644,
        &root,
        false,
    ));
    out.push(file(
        "/etc/rabbitmq/definitions.json",
        rabbitmq_definitions(pair)?,
        0o640,
        &Owner::new("root", "rabbitmq"),
        true,
    ));
    // seed 000: the same cookie on both nodes, 0400 rabbitmq:rabbitmq, before the broker's first start
    out.push(file(
        "/var/lib/rabbitmq/.erlang.cookie",
        pair.secrets.erlang_cookie.expose().as_bytes().to_vec(),
        0o400,
        &Owner::new("rabbitmq", "rabbitmq"),
        true,
    ));
    if !role.authorized_keys.is_empty() {
        out.push(file(
            "/root/.ssh/authorized_keys",
            r("authorized_keys", &ctx)?,
            0o600,
            &root,
            false,
        ));
    }
    Ok(out)
}

/// Render every file of the arbiter: its name, /etc/hosts with the pair,
/// its interface (`[network]`) and root's SSH keys. qnetd has no
/// configuration file; its NSS database is made by `apply`
/// ([`crate::nssdb`]).
pub fn render_arbiter(role: &ArbiterRole) -> Result<Vec<RenderedFile>> {
    let t = tera()?;
    let mut ctx = tera::Context::new();
    let me = ArbiterCtx {
        name: &role.name,
        address: role.address.to_string(),
    };
    ctx.insert("node", &me);
    let nodes: Vec<NodeCtx> = role.nodes.iter().map(NodeCtx::from).collect();
    ctx.insert("nodes", &nodes);
    ctx.insert("arbiter", &me);
    ctx.insert("keys", &role.authorized_keys);
    if let Some(net) = &role.network {
        ctx.insert("network", &network_ctx(net));
    }
    let r = |name: &str| -> Result<Vec<u8>> {
        Ok(t.render(name, &ctx)
            .with_context(|| format!("rendering {name}"))?
            .into_bytes())
    };
    let file = |path: &str, content: Vec<u8>, mode: u32| RenderedFile {
        path: PathBuf::from(path),
        content,
        mode,
        owner: Owner::root(),
        secret: false,
    };
    let mut out = vec![
        file("/etc/hostname", r("hostname")?, 0o644),
        file("/etc/hosts", r("hosts")?, 0o644),
    ];
    if role.network.is_some() {
        out.push(file(
            "/etc/systemd/network/10-nib-cluster.network",
            r("10-nib-cluster.network")?,
            0o644,
        ));
    }
    if !role.authorized_keys.is_empty() {
        out.push(file(
            "/root/.ssh/authorized_keys",
            r("authorized_keys")?,
            0o600,
        ));
    }
    Ok(out)
}

/// RabbitMQ definitions: the `openstack` user (password hashed), its
/// permissions on `/`, and the mirroring policy (seed 000; classic mirroring
/// on 3.8/3.10: firstboot/doc/HA.md, "RabbitMQ").
fn rabbitmq_definitions(pair: &Pair) -> Result<Vec<u8>> {
    let hash = rabbitmq_password_hash(
        pair.secrets.rabbitmq_openstack_password.expose(),
        &salt_for(pair),
    );
    let defs = serde_json::json!({
        "users": [{
            "name": RABBITMQ_USER,
            "password_hash": hash,
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": ""
        }],
        "vhosts": [{ "name": "/" }],
        "permissions": [{
            "user": RABBITMQ_USER,
            "vhost": "/",
            "configure": ".*",
            "write": ".*",
            "read": ".*"
        }],
        "policies": [{
            "vhost": "/",
            "name": "ha-all",
            "pattern": "^(?!amq\\.).*",
            "apply-to": "all",
            // A confirmed message is on every mirror that was in the queue
            // when it was published; a mirror that joined later (a node
            // back from a failure) lacks the older ones until it has
            // synchronised (automatic: at once). `when-synced`: a master
            // that dies before that leaves the queue unavailable until its
            // node returns, instead of promoting a mirror that would drop
            // confirmed messages (the default, `always`). A synchronised
            // mirror, the steady state, is promoted as before.
            "definition": {
                "ha-mode": "all",
                "ha-sync-mode": "automatic",
                "ha-promote-on-failure": "when-synced",
                "ha-promote-on-shutdown": "when-synced"
            },
            "priority": 0
        }]
    });
    let mut s = serde_json::to_string_pretty(&defs).context("serializing RabbitMQ definitions")?;
    s.push('\n');
    Ok(s.into_bytes())
}

/// The salt is derived from the cookie (a secret shared by both nodes), so
/// both nodes and every rerun render the same bytes, and it is not guessable.
fn salt_for(pair: &Pair) -> [u8; 4] {
    let d = Sha256::new()
        .chain_update(b"nib rabbitmq salt\0")
        .chain_update(pair.name.as_bytes())
        .chain_update(b"\0")
        .chain_update(pair.secrets.erlang_cookie.expose().as_bytes())
        .finalize();
    [d[0], d[1], d[2], d[3]]
}

/// `rabbit_password_hashing_sha256`: base64(salt ++ sha256(salt ++ password)).
pub fn rabbitmq_password_hash(password: &str, salt: &[u8; 4]) -> String {
    let digest = Sha256::new()
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize();
    let mut v = salt.to_vec();
    v.extend_from_slice(&digest);
    base64::engine::general_purpose::STANDARD.encode(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_hash_matches_reference() {
        // The example from RabbitMQ's "Passwords" guide (salt 908D C60A, password "test12").
        assert_eq!(
            rabbitmq_password_hash("test12", &[0x90, 0x8d, 0xc6, 0x0a]),
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
        );
    }
}
