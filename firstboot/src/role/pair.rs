//! The parse step: role data as written ([`ClusterSpec`]: strings, as the
//! operator typed them) becomes a [`Pair`], whose fields are typed and
//! checked, or else the list of every problem with its key path. Code that
//! runs after this step holds a `Pair` and has nothing left to check.
//!
//! One parser per section, called in the file's order, so problems come out
//! in the order an operator reads the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;

use base64::Engine as _;

use crate::role as raw;
use crate::role::{ClusterSpec, FencingMode, Problem, Secret};

/// The pair as valid role data describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// `cluster.name` (corosync's cluster_name).
    pub name: String,
    /// The name of the node that applies the pacemaker configuration and is
    /// the first MariaDB primary; one of `nodes`.
    pub bootstrap: String,
    /// In role data order (corosync's nodelist, /etc/hosts).
    pub nodes: [Node; 2],
    pub network: Option<Network>,
    pub vip: Vip,
    pub fencing: Fencing,
    pub secrets: Secrets,
    /// `ssh.authorized_keys`.
    pub authorized_keys: Vec<String>,
    /// `[arbiter]`: corosync-qdevice on both nodes asks its qnetd for the
    /// third vote; without it corosync runs `two_node`.
    pub arbiter: Option<Arbiter>,
}

impl Pair {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Whether a network split between the nodes can leave both of them
    /// quorate and writable: no fencing and no arbiter. Valid role data
    /// has this only with `fencing.accept_split_brain = true`, and every
    /// seed, boot and `status` then says [`SPLIT_BRAIN_WARNING`].
    pub fn split_brain_possible(&self) -> bool {
        self.fencing == Fencing::None && self.arbiter.is_none()
    }
}

/// What `nib seed`, every boot's journal and `nib-firstboot status` say
/// when the role data accepts a split brain (firstboot/doc/HA.md,
/// "Fencing"; the figures are issue 17's measurement on the pair).
pub const SPLIT_BRAIN_WARNING: &str = "SPLIT BRAIN ACCEPTED (role data fencing.mode = \"none\", \
no [arbiter], fencing.accept_split_brain = true): on a network split between the nodes both \
stay quorate, both run the VIP and a writable MariaDB, and acknowledged writes are lost \
(measured: 447 of 1702 in a 45 s split); add an [arbiter] or set fencing.mode = \"ipmi\" \
with one device per node";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Short hostname (RFC 1123 label).
    pub name: String,
    /// corosync nodeid and MariaDB server_id.
    pub id: NonZeroU32,
    /// Cluster address: corosync ring0, MariaDB, RabbitMQ, memcached.
    pub address: IpAddr,
}

/// The arbiter as the controllers see it: where qnetd listens, and what
/// corosync-qdevice trusts and presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arbiter {
    pub name: String,
    /// Not a node's address nor the VIP; of the nodes' family (and in their
    /// subnet when `[network]` is given).
    pub address: IpAddr,
    pub tls: QdeviceTls,
}

/// corosync-qdevice's NSS database, PEM: the CA and the pair's client
/// certificate with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QdeviceTls {
    pub ca_cert: String,
    pub cluster_cert: String,
    pub cluster_key: Secret,
}

/// corosync-qnetd's NSS database, PEM: the CA and qnetd's server
/// certificate with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QnetdTls {
    pub ca_cert: String,
    pub qnetd_cert: String,
    pub qnetd_key: Secret,
}

/// Valid role data as the arbiter reads it: only what an arbiter
/// configures (its name, address and interface, SSH keys, qnetd's TLS).
/// Its seed carries none of the pair's other secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArbiterRole {
    /// `cluster.name`.
    pub cluster: String,
    pub name: String,
    pub address: IpAddr,
    /// The pair, for /etc/hosts.
    pub nodes: [Node; 2],
    pub network: Option<Network>,
    pub tls: QnetdTls,
    /// As [`NodeRole::authorized_keys`].
    pub authorized_keys: Vec<String>,
}

/// What a seed makes of a host: one of the pair, or the arbiter.
// One value per run: the size difference costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Node(NodeRole),
    Arbiter(ArbiterRole),
}

impl Role {
    /// This host's name.
    pub fn name(&self) -> &str {
        match self {
            Role::Node(r) => &r.node.name,
            Role::Arbiter(a) => &a.name,
        }
    }
}

/// The cluster interface nib configures (`[network]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub interface: String,
    /// Fits the nodes' address family; both nodes are in one subnet.
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

/// The service address that follows the MariaDB primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// In the nodes' subnet, neither node's address.
    pub address: IpAddr,
    pub prefix: u8,
    pub interface: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fencing {
    /// One device per node.
    Ipmi(Vec<FenceDevice>),
    /// No fencing: chosen explicitly in the role data.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceDevice {
    /// The node this device fences (one of the pair's).
    pub node: String,
    /// BMC address or host name.
    pub address: String,
    pub username: String,
    pub password: Secret,
    /// IPMI cipher suite (0–17), when the role data pins one.
    pub cipher: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    pub erlang_cookie: Secret,
    pub corosync_authkey: AuthKey,
    pub mariadb_replication_password: Secret,
    pub rabbitmq_openstack_password: Secret,
}

/// The decoded corosync authkey (128–1024 bytes). Like [`Secret`], `Debug`
/// and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey(Vec<u8>);

impl AuthKey {
    /// The key bytes, for the renderer that writes /etc/corosync/authkey.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Valid role data as one node reads it (see [`raw::RoleData::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRole {
    pub pair: Pair,
    /// This node, one of `pair.nodes`.
    pub node: Node,
    /// Keys root accepts: `ssh.authorized_keys`, then cloud-config's
    /// `ssh_authorized_keys`, trimmed, duplicates dropped.
    pub authorized_keys: Vec<String>,
}

/// The problems found so far, key paths prefixed (`nib.` under cloud-config).
struct Problems<'a> {
    prefix: &'a str,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn add(&mut self, path: impl fmt::Display, message: impl Into<String>) {
        self.list.push(Problem {
            path: format!("{}{path}", self.prefix),
            message: message.into(),
        });
    }

    fn count(&self) -> usize {
        self.list.len()
    }
}

/// Every node address that parses, with its node's index: the later
/// sections check the VIP and the subnet against them even when another
/// node is wrong.
type Addresses = Vec<(usize, IpAddr)>;

/// Whose view of the file a parse takes: a seed carries only what its
/// host needs, so each host checks only that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// One of the pair: every section; of `[secrets.arbiter]` the CA and
    /// the cluster certificate and key.
    Controller,
    /// The arbiter: no fencing and none of the pair's secrets; of
    /// `[secrets.arbiter]` the CA and qnetd's certificate and key.
    Arbiter,
    /// The whole `cluster.toml` (`nib seed`): everything.
    Whole,
}

impl ClusterSpec {
    /// The typed pair as a controller reads it, or every problem of the
    /// tree (key paths prefixed with `prefix`), never empty.
    pub fn parse_pair(&self, prefix: &str) -> Result<Pair, Vec<Problem>> {
        self.parse(prefix, View::Controller)
            .map(|(pair, _)| pair.expect("the controller view yields a pair"))
    }

    /// The tree as the arbiter reads it (the `[arbiter]` section must be
    /// there), or every problem.
    pub fn parse_arbiter(&self, prefix: &str) -> Result<ArbiterRole, Vec<Problem>> {
        match self.parse(prefix, View::Arbiter)? {
            (_, Some(a)) => Ok(a),
            (_, None) => Err(vec![Problem {
                path: format!("{prefix}arbiter"),
                message: "missing: this host is not the arbiter".into(),
            }]),
        }
    }

    /// The whole file (`nib seed`): the pair and, with `[arbiter]`, the
    /// arbiter's view, with every problem of either.
    pub fn parse_whole(&self, prefix: &str) -> Result<(Pair, Option<ArbiterRole>), Vec<Problem>> {
        self.parse(prefix, View::Whole)
            .map(|(pair, a)| (pair.expect("the whole view yields a pair"), a))
    }

    fn parse(
        &self,
        prefix: &str,
        view: View,
    ) -> Result<(Option<Pair>, Option<ArbiterRole>), Vec<Problem>> {
        let mut p = Problems {
            prefix,
            list: Vec::new(),
        };
        let cluster = cluster_section(&self.cluster, &self.node, &mut p);
        let (nodes, ips) = node_section(&self.node, &mut p);
        let arbiter = match &self.arbiter {
            None => Some(None),
            Some(a) => arbiter_section(a, self, &ips, &mut p).map(Some),
        };
        let network = match &self.network {
            None => Some(None),
            Some(net) => network_section(net, &ips, &mut p).map(Some),
        };
        let vip = vip_section(&self.vip, self.network.as_ref(), &ips, &mut p);
        let pair_side = view != View::Arbiter;
        let fencing = if pair_side {
            fencing_section(&self.fencing, &self.node, self.arbiter.is_some(), &mut p)
        } else {
            Some(Fencing::None)
        };
        let secrets = if pair_side {
            secrets_section(&self.secrets, &mut p)
        } else {
            None
        };
        let tls = arbiter_secrets_section(
            self.secrets.arbiter.as_ref(),
            self.arbiter.is_some(),
            view,
            &mut p,
        );
        let authorized_keys = ssh_section(&self.ssh, &mut p);
        let (
            Some((name, bootstrap)),
            Some(nodes),
            Some(arbiter),
            Some(network),
            Some(vip),
            Some(fencing),
            Some((qdevice, qnetd)),
            Some(authorized_keys),
        ) = (
            cluster,
            nodes,
            arbiter,
            network,
            vip,
            fencing,
            tls,
            authorized_keys,
        )
        else {
            // A section yields None only after it reported why.
            return Err(p.list);
        };
        if !p.list.is_empty() {
            return Err(p.list);
        }
        let arbiter_role = match (&arbiter, qnetd) {
            (Some((a_name, a_addr)), Some(tls)) => Some(ArbiterRole {
                cluster: name.clone(),
                name: a_name.clone(),
                address: *a_addr,
                nodes: nodes.clone(),
                network: network.clone(),
                tls,
                authorized_keys: authorized_keys.clone(),
            }),
            _ => None,
        };
        let pair = match secrets {
            Some(secrets) => Some(Pair {
                name,
                bootstrap,
                nodes,
                network,
                vip,
                fencing,
                secrets,
                authorized_keys,
                arbiter: arbiter.zip(qdevice).map(|((name, address), tls)| Arbiter {
                    name,
                    address,
                    tls,
                }),
            }),
            // the arbiter's view has none of the pair's secrets
            None if !pair_side => None,
            None => return Err(p.list),
        };
        Ok((pair, arbiter_role))
    }
}

/// `[cluster]`: `(name, bootstrap)`.
fn cluster_section(
    c: &raw::ClusterSection,
    nodes: &[raw::Node],
    p: &mut Problems,
) -> Option<(String, String)> {
    let before = p.count();
    if c.name.is_empty()
        || c.name.len() > 64
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        p.add(
            "cluster.name",
            format!("{:?} must be 1–64 characters of [A-Za-z0-9_-]", c.name),
        );
    }
    if !nodes.iter().any(|n| n.name == c.bootstrap) {
        p.add(
            "cluster.bootstrap",
            format!("{:?} names no node", c.bootstrap),
        );
    }
    (p.count() == before).then(|| (c.name.clone(), c.bootstrap.clone()))
}

/// `[[node]]`: a pair (corosync two_node, one primary + one replica).
fn node_section(nodes: &[raw::Node], p: &mut Problems) -> (Option<[Node; 2]>, Addresses) {
    let before = p.count();
    if nodes.len() != 2 {
        p.add(
            "node",
            format!(
                "exactly 2 nodes are required (an active/backup pair), found {}",
                nodes.len()
            ),
        );
    }
    let mut names = BTreeMap::new();
    let mut ids = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    let mut ips = Vec::new();
    let mut parsed = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if !is_hostname(&n.name) {
            p.add(
                format!("node[{i}].name"),
                format!("{:?} is not an RFC 1123 host name label", n.name),
            );
        }
        if let Some(j) = names.insert(n.name.clone(), i) {
            p.add(
                format!("node[{i}].name"),
                format!("{:?} duplicates node[{j}].name", n.name),
            );
        }
        let id = NonZeroU32::new(n.id);
        if id.is_none() {
            p.add(
                format!("node[{i}].id"),
                "must be 1 or more (corosync nodeid, MariaDB server_id)",
            );
        }
        if let Some(j) = ids.insert(n.id, i) {
            p.add(
                format!("node[{i}].id"),
                format!("{} duplicates node[{j}].id", n.id),
            );
        }
        let address = match n.address.parse::<IpAddr>() {
            Ok(ip) => {
                if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                    p.add(
                        format!("node[{i}].address"),
                        format!("{ip} cannot be a cluster address"),
                    );
                }
                if let Some(j) = addrs.insert(ip, i) {
                    p.add(
                        format!("node[{i}].address"),
                        format!("{ip} duplicates node[{j}].address"),
                    );
                }
                ips.push((i, ip));
                Some(ip)
            }
            Err(_) => {
                p.add(
                    format!("node[{i}].address"),
                    format!("{:?} is not an IPv4 or IPv6 address", n.address),
                );
                None
            }
        };
        parsed.push(id.zip(address).map(|(id, address)| Node {
            name: n.name.clone(),
            id,
            address,
        }));
    }
    if ips.windows(2).any(|w| w[0].1.is_ipv4() != w[1].1.is_ipv4()) {
        p.add(
            "node",
            "all node addresses must be of one family (IPv4 or IPv6)",
        );
    }
    let pair = (p.count() == before)
        .then(|| parsed.into_iter().collect::<Option<Vec<Node>>>())
        .flatten()
        .and_then(|v| <[Node; 2]>::try_from(v).ok());
    (pair, ips)
}

/// `[network]`, when given.
fn network_section(
    net: &raw::Network,
    ips: &[(usize, IpAddr)],
    p: &mut Problems,
) -> Option<Network> {
    let before = p.count();
    if !is_ifname(&net.interface) {
        p.add(
            "network.interface",
            format!("{:?} is not a valid interface name", net.interface),
        );
    }
    let max = if ips.first().is_some_and(|(_, ip)| ip.is_ipv6()) {
        128
    } else {
        32
    };
    let prefix_fits = net.prefix > 0 && net.prefix <= max;
    if !prefix_fits {
        p.add(
            "network.prefix",
            format!("{} is outside 1–{max}", net.prefix),
        );
    } else {
        for (i, ip) in ips {
            for (j, other) in ips {
                if i < j && !same_subnet(*ip, *other, net.prefix) {
                    p.add(
                        "network.prefix",
                        format!(
                            "node[{i}] and node[{j}] are not in one /{} subnet",
                            net.prefix
                        ),
                    );
                }
            }
        }
    }
    let gateway = match &net.gateway {
        None => Some(None),
        Some(gw) => match gw.parse::<IpAddr>() {
            Ok(g) => {
                if let Some((_, ip)) = ips.first() {
                    if prefix_fits && !same_subnet(g, *ip, net.prefix) {
                        p.add(
                            "network.gateway",
                            format!("{g} is outside the nodes' /{} subnet", net.prefix),
                        );
                    }
                }
                Some(Some(g))
            }
            Err(_) => {
                p.add(
                    "network.gateway",
                    format!("{gw:?} is not an IPv4 or IPv6 address"),
                );
                None
            }
        },
    };
    // Every entry is checked (no early return): all bad ones are reported.
    let mut dns = Vec::new();
    for (k, d) in net.dns.iter().enumerate() {
        match d.parse::<IpAddr>() {
            Ok(ip) => dns.push(ip),
            Err(_) => p.add(
                format!("network.dns[{k}]"),
                format!("{d:?} is not an IPv4 or IPv6 address"),
            ),
        }
    }
    match gateway {
        Some(gateway) if p.count() == before => Some(Network {
            interface: net.interface.clone(),
            prefix: net.prefix,
            gateway,
            dns,
        }),
        _ => None,
    }
}

/// `[vip]`.
fn vip_section(
    vip: &raw::Vip,
    network: Option<&raw::Network>,
    ips: &[(usize, IpAddr)],
    p: &mut Problems,
) -> Option<Vip> {
    let before = p.count();
    let cidr = match parse_cidr(&vip.address) {
        Err(m) => {
            p.add("vip.address", m);
            None
        }
        Ok((address, prefix)) => {
            // the last node with that address, as a later duplicate wins
            if let Some((j, _)) = ips.iter().rev().find(|(_, ip)| *ip == address) {
                p.add(
                    "vip.address",
                    format!("{address} is node[{j}]'s address; the VIP must be a separate address"),
                );
            }
            for (i, ip) in ips {
                if ip.is_ipv4() != address.is_ipv4() {
                    p.add(
                        "vip.address",
                        format!("{address} is not of node[{i}]'s address family"),
                    );
                } else if !same_subnet(address, *ip, prefix) {
                    p.add("vip.address", format!("{address}/{prefix} does not contain node[{i}].address {ip}: the VIP must be in the nodes' subnet"));
                }
            }
            Some((address, prefix))
        }
    };
    if !is_ifname(&vip.interface) {
        p.add(
            "vip.interface",
            format!("{:?} is not a valid interface name", vip.interface),
        );
    }
    if let Some(net) = network {
        if net.interface != vip.interface {
            p.add(
                "vip.interface",
                format!(
                    "{:?} differs from network.interface {:?}",
                    vip.interface, net.interface
                ),
            );
        }
    }
    match cidr {
        Some((address, prefix)) if p.count() == before => Some(Vip {
            address,
            prefix,
            interface: vip.interface.clone(),
        }),
        _ => None,
    }
}

/// `[arbiter]`: `(name, address)`.
fn arbiter_section(
    a: &raw::Arbiter,
    spec: &ClusterSpec,
    ips: &[(usize, IpAddr)],
    p: &mut Problems,
) -> Option<(String, IpAddr)> {
    let before = p.count();
    if !is_hostname(&a.name) {
        p.add(
            "arbiter.name",
            format!("{:?} is not an RFC 1123 host name label", a.name),
        );
    }
    if let Some(i) = spec.node.iter().position(|n| n.name == a.name) {
        p.add(
            "arbiter.name",
            format!(
                "{:?} is node[{i}]'s name; the arbiter is a third host",
                a.name
            ),
        );
    }
    let address = match a.address.parse::<IpAddr>() {
        Err(_) => {
            p.add(
                "arbiter.address",
                format!("{:?} is not an IPv4 or IPv6 address", a.address),
            );
            None
        }
        Ok(ip) => {
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                p.add(
                    "arbiter.address",
                    format!("{ip} cannot be the arbiter's address"),
                );
            }
            if let Some((j, _)) = ips.iter().find(|(_, n)| *n == ip) {
                p.add(
                    "arbiter.address",
                    format!("{ip} is node[{j}]'s address; the arbiter is a third host"),
                );
            }
            if let Some((i, _)) = ips.iter().find(|(_, n)| n.is_ipv4() != ip.is_ipv4()) {
                p.add(
                    "arbiter.address",
                    format!("{ip} is not of node[{i}]'s address family"),
                );
            }
            if parse_cidr(&spec.vip.address).is_ok_and(|(vip, _)| vip == ip) {
                p.add(
                    "arbiter.address",
                    format!("{ip} is the VIP; the arbiter needs its own address"),
                );
            }
            if let (Some(net), Some((_, node))) = (&spec.network, ips.first()) {
                let max = if ip.is_ipv6() { 128 } else { 32 };
                if net.prefix > 0 && net.prefix <= max && !same_subnet(ip, *node, net.prefix) {
                    p.add(
                        "arbiter.address",
                        format!(
                            "{ip} is outside the nodes' /{} subnet, which [network] configures on every host (leave [network] out for a routed arbiter)",
                            net.prefix
                        ),
                    );
                }
            }
            Some(ip)
        }
    };
    match address {
        Some(ip) if p.count() == before => Some((a.name.clone(), ip)),
        _ => None,
    }
}

/// `[secrets.arbiter]`: what the controllers' qdevice and the arbiter's
/// qnetd hold, as much of it as `view` needs.
fn arbiter_secrets_section(
    s: Option<&raw::ArbiterSecrets>,
    has_arbiter: bool,
    view: View,
    p: &mut Problems,
) -> Option<(Option<QdeviceTls>, Option<QnetdTls>)> {
    let Some(s) = s else {
        if has_arbiter {
            p.add(
                "secrets.arbiter",
                "missing: [arbiter] needs the qnetd CA and certificates (`nib cluster init --arbiter` makes them)",
            );
            return None;
        }
        return Some((None, None));
    };
    if !has_arbiter {
        p.add("secrets.arbiter", "given, but there is no [arbiter]");
        return None;
    }
    let before = p.count();
    let controller = view != View::Arbiter;
    let arbiter = view != View::Controller;
    let fields: [(&str, &str, &str, bool); 5] = [
        ("ca_cert", &s.ca_cert, "CERTIFICATE", true),
        ("qnetd_cert", &s.qnetd_cert, "CERTIFICATE", arbiter),
        ("qnetd_key", s.qnetd_key.expose(), "PRIVATE KEY", arbiter),
        ("cluster_cert", &s.cluster_cert, "CERTIFICATE", controller),
        (
            "cluster_key",
            s.cluster_key.expose(),
            "PRIVATE KEY",
            controller,
        ),
    ];
    for (key, value, label, needed) in fields {
        let path = format!("secrets.arbiter.{key}");
        if value.is_empty() {
            if needed {
                p.add(path, "missing");
            }
        } else if let Err(m) = check_pem(value, label) {
            p.add(path, m);
        }
    }
    if p.count() != before {
        return None;
    }
    let qdevice = controller.then(|| QdeviceTls {
        ca_cert: s.ca_cert.clone(),
        cluster_cert: s.cluster_cert.clone(),
        cluster_key: s.cluster_key.clone(),
    });
    let qnetd = arbiter.then(|| QnetdTls {
        ca_cert: s.ca_cert.clone(),
        qnetd_cert: s.qnetd_cert.clone(),
        qnetd_key: s.qnetd_key.clone(),
    });
    Some((qdevice, qnetd))
}

/// One PEM block labelled `label` (`CERTIFICATE`, `PRIVATE KEY`: PKCS#8)
/// whose body is base64. The message never quotes the value.
pub fn check_pem(v: &str, label: &str) -> Result<(), String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let t = v.trim();
    let body = t
        .strip_prefix(&begin)
        .and_then(|r| r.strip_suffix(&end))
        .ok_or_else(|| format!("must be one PEM block \"{begin}\" … \"{end}\""))?;
    let b64: String = body.split_whitespace().collect();
    match base64::engine::general_purpose::STANDARD.decode(&b64) {
        Ok(der) if der.len() >= 32 => Ok(()),
        _ => Err(format!(
            "the body of the PEM block is not base64 DER ({label})"
        )),
    }
}

/// The refusal of mode "none" without an arbiter: what happens, and the
/// ways out (issue 17: measured on the pair with `two_node`).
pub const SPLIT_BRAIN_REFUSAL: &str = "\"none\" without an [arbiter] is refused: on a network \
split between the nodes both stay quorate (corosync two_node), both promote MariaDB and take \
the VIP, and acknowledged writes will be lost (measured: 447 of 1702 in a 45 s split). Either \
add a quorum arbiter (`nib cluster init --arbiter NAME=ADDR`, or an [arbiter] section with \
[secrets.arbiter]), or set mode = \"ipmi\" with a [[fencing.device]] per node, or accept the \
loss with fencing.accept_split_brain = true";

/// `[fencing]` and its `[[fencing.device]]`s. Mode "none" needs an
/// arbiter (a third vote decides a split) or an explicit
/// `accept_split_brain`.
fn fencing_section(
    f: &raw::Fencing,
    nodes: &[raw::Node],
    has_arbiter: bool,
    p: &mut Problems,
) -> Option<Fencing> {
    let before = p.count();
    match f.mode {
        None => p.add(
            "fencing.mode",
            if has_arbiter {
                "missing: choose \"ipmi\" or \"none\" (with the [arbiter] deciding splits)"
            } else {
                "missing: choose \"ipmi\" with a [[fencing.device]] per node, or \"none\" with an [arbiter]"
            },
        ),
        Some(FencingMode::None) => {
            if !f.device.is_empty() {
                p.add(
                    "fencing.device",
                    "devices are given but fencing.mode is \"none\"",
                );
            }
            if !has_arbiter && !f.accept_split_brain {
                p.add("fencing.mode", SPLIT_BRAIN_REFUSAL);
            }
        }
        Some(FencingMode::Ipmi) => {
            for n in nodes {
                if !f.device.iter().any(|d| d.node == n.name) {
                    p.add(
                        "fencing.device",
                        format!("mode \"ipmi\" needs a device for node {:?}", n.name),
                    );
                }
            }
        }
    }
    let mut fenced = BTreeMap::new();
    for (k, d) in f.device.iter().enumerate() {
        if !nodes.iter().any(|n| n.name == d.node) {
            p.add(
                format!("fencing.device[{k}].node"),
                format!("{:?} names no node", d.node),
            );
        }
        if let Some(j) = fenced.insert(d.node.clone(), k) {
            p.add(
                format!("fencing.device[{k}].node"),
                format!("{:?} already has fencing.device[{j}]", d.node),
            );
        }
        if d.address.parse::<IpAddr>().is_err() && !is_dns_name(&d.address) {
            p.add(
                format!("fencing.device[{k}].address"),
                format!("{:?} is neither an address nor a host name", d.address),
            );
        }
        if d.username.is_empty() || !d.username.chars().all(|c| c.is_ascii_graphic()) {
            p.add(
                format!("fencing.device[{k}].username"),
                "must be non-empty printable ASCII without spaces",
            );
        }
        if let Err(m) = check_password(&d.password) {
            p.add(format!("fencing.device[{k}].password"), m);
        }
        if let Some(c) = d.cipher.filter(|c| *c > 17) {
            p.add(
                format!("fencing.device[{k}].cipher"),
                format!("{c} is not an IPMI 2.0 cipher suite (ipmitool -C takes 0–17; 3 and 17 are common)"),
            );
        }
    }
    if p.count() != before {
        return None;
    }
    match f.mode? {
        FencingMode::None => Some(Fencing::None),
        FencingMode::Ipmi => Some(Fencing::Ipmi(
            f.device
                .iter()
                .map(|d| FenceDevice {
                    node: d.node.clone(),
                    address: d.address.clone(),
                    username: d.username.clone(),
                    password: d.password.clone(),
                    cipher: d.cipher,
                })
                .collect(),
        )),
    }
}

/// `[secrets]`.
fn secrets_section(s: &raw::Secrets, p: &mut Problems) -> Option<Secrets> {
    let before = p.count();
    let cookie = s.erlang_cookie.expose();
    if cookie.is_empty() {
        p.add("secrets.erlang_cookie", "missing");
    } else if !(20..=255).contains(&cookie.len())
        || !cookie.chars().all(|c| c.is_ascii_alphanumeric())
    {
        p.add(
            "secrets.erlang_cookie",
            format!(
                "must be 20–255 characters of [A-Za-z0-9] (has {})",
                cookie.chars().count()
            ),
        );
    }
    let authkey = if s.corosync_authkey.is_empty() {
        p.add("secrets.corosync_authkey", "missing");
        None
    } else {
        match decode_authkey(s.corosync_authkey.expose()) {
            Ok(bytes) => Some(AuthKey(bytes)),
            Err(m) => {
                p.add("secrets.corosync_authkey", m);
                None
            }
        }
    };
    for (key, v) in [
        (
            "secrets.mariadb_replication_password",
            &s.mariadb_replication_password,
        ),
        (
            "secrets.rabbitmq_openstack_password",
            &s.rabbitmq_openstack_password,
        ),
    ] {
        if let Err(m) = check_password(v) {
            p.add(key, m);
        }
    }
    match authkey {
        Some(corosync_authkey) if p.count() == before => Some(Secrets {
            erlang_cookie: s.erlang_cookie.clone(),
            corosync_authkey,
            mariadb_replication_password: s.mariadb_replication_password.clone(),
            rabbitmq_openstack_password: s.rabbitmq_openstack_password.clone(),
        }),
        _ => None,
    }
}

/// `[ssh]`: the authorized keys.
fn ssh_section(ssh: &raw::Ssh, p: &mut Problems) -> Option<Vec<String>> {
    let before = p.count();
    for (k, key) in ssh.authorized_keys.iter().enumerate() {
        if let Err(m) = check_authorized_key(key) {
            p.add(format!("ssh.authorized_keys[{k}]"), m);
        }
    }
    (p.count() == before).then(|| ssh.authorized_keys.clone())
}

/// Characters a password may hold: it travels unquoted through the resource
/// agent's shell (`--password=$OCF_RESKEY_replication_passwd`) and inside
/// single-quoted SQL, so quotes, backslashes, `$`, spaces and the like are out.
pub const PASSWORD_CHARS: &str = "A-Za-z0-9 and . _ + = ~ ^ : , @ % -";

fn check_password(s: &Secret) -> Result<(), String> {
    let v = s.expose();
    if v.is_empty() {
        return Err("missing".into());
    }
    if !(12..=128).contains(&v.len()) {
        return Err(format!(
            "must be 12–128 characters (has {})",
            v.chars().count()
        ));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._+=~^:,@%-".contains(c))
    {
        return Err(format!("may only contain {PASSWORD_CHARS}"));
    }
    Ok(())
}

/// Decode `base64:…` into the corosync authkey bytes (128–1024, corosync's limits).
pub fn decode_authkey(v: &str) -> Result<Vec<u8>, String> {
    let b64 = v
        .strip_prefix("base64:")
        .ok_or_else(|| "must start with \"base64:\"".to_string())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "is not valid base64 after \"base64:\"".to_string())?;
    if !(128..=1024).contains(&bytes.len()) {
        return Err(format!(
            "decodes to {} bytes; corosync needs 128–1024",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// `ADDRESS/PREFIX` with a prefix that fits the family.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} must be ADDRESS/PREFIX, e.g. 192.168.60.100/24"))?;
    let ip: IpAddr = a
        .parse()
        .map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))?;
    let prefix: u8 = p
        .parse()
        .map_err(|_| format!("prefix {p:?} is not a number"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix == 0 || prefix > max {
        return Err(format!("prefix /{prefix} is outside 1–{max}"));
    }
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Err(format!("{ip} cannot be a virtual IP"));
    }
    Ok((ip, prefix))
}

fn same_subnet(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// An RFC 1123 host name label: 1–63 of [A-Za-z0-9-], not starting or ending with `-`.
/// Node names are short hostnames (RabbitMQ node `rabbit@<name>`), so no dots.
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_hostname)
}

/// Linux interface names: 1–15 bytes, no `/`, whitespace or `:`.
fn is_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':')
}

pub(super) fn check_authorized_key(k: &str) -> Result<(), String> {
    if k.contains('\n') || k.contains('\r') {
        return Err("must be a single line".into());
    }
    let mut parts = k.split_whitespace();
    let kind = parts.next().unwrap_or("");
    let known = [
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if !(known.contains(&kind) || kind.starts_with("ecdsa-sha2-")) {
        return Err(format!(
            "key type {kind:?} is not an OpenSSH public key type"
        ));
    }
    let blob = parts.next().unwrap_or("");
    if base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map(|b| b.len() < 16)
        .unwrap_or(true)
    {
        return Err("the key data is not valid base64".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const EXAMPLE: &str = include_str!("../../../tests/fixtures/cluster.toml");
    const IPMI: &str = include_str!("../../../tests/fixtures/cib/cluster-ipmi.toml");

    fn spec(text: &str) -> ClusterSpec {
        ClusterSpec::from_toml(text, "cluster.toml").expect("fixture parses")
    }

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn the_example_parses_into_typed_fields() {
        let pair = spec(EXAMPLE).parse_pair("").expect("valid");
        assert_eq!(pair.name, "openstack-ctl");
        assert_eq!(pair.bootstrap, "controller01");
        let [a, b] = &pair.nodes;
        assert_eq!(
            (a.name.as_str(), a.id.get(), a.address),
            ("controller01", 1, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)))
        );
        assert_eq!(
            (b.name.as_str(), b.id.get(), b.address),
            ("controller02", 2, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 12)))
        );
        let net = pair.network.as_ref().expect("[network] given");
        assert_eq!((net.interface.as_str(), net.prefix), ("eth0", 24));
        assert_eq!((net.gateway, net.dns.len()), (None, 0));
        assert_eq!(
            pair.vip,
            Vip {
                address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)),
                prefix: 24,
                interface: "eth0".into(),
            }
        );
        assert_eq!(pair.fencing, Fencing::None);
        assert_eq!(pair.secrets.corosync_authkey.expose().len(), 256);
        assert_eq!(pair.authorized_keys.len(), 1);
    }

    #[test]
    fn ipmi_devices_are_kept_in_order() {
        let pair = spec(IPMI).parse_pair("").expect("valid");
        let Fencing::Ipmi(devices) = &pair.fencing else {
            panic!("fencing is ipmi: {:?}", pair.fencing);
        };
        let nodes: Vec<_> = devices.iter().map(|d| d.node.as_str()).collect();
        assert_eq!(nodes, ["controller01", "controller02"]);
        assert_eq!(devices[1].password.expose(), "bmc-pw-two-TEST");
        assert_eq!((devices[0].cipher, devices[1].cipher), (None, Some(3)));
        let mut s = spec(IPMI);
        s.fencing.device[0].cipher = Some(18);
        let problems = s.parse_pair("").expect_err("cipher 18");
        assert_eq!(paths(&problems), ["fencing.device[0].cipher"]);
    }

    #[test]
    fn gateway_and_dns_are_addresses() {
        let mut s = spec(EXAMPLE);
        let net = s.network.as_mut().expect("[network]");
        net.gateway = Some("198.18.0.1".into());
        net.dns = vec!["198.18.0.53".into(), "fd00::53".into()];
        let pair = s.parse_pair("").expect("valid");
        let net = pair.network.expect("[network]");
        assert_eq!(net.gateway, Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))));
        assert_eq!(net.dns[1], "fd00::53".parse::<IpAddr>().expect("v6"));
    }

    #[test]
    fn one_mistake_per_section_yields_every_problem_in_file_order() {
        let mut s = spec(IPMI);
        s.cluster.name = "bad name".into();
        s.node[1].address = "198.18.0.300".into();
        let net = s.network.as_mut().expect("[network]");
        net.dns = vec!["dns1".into(), "198.18.0.53".into(), "dns3".into()];
        s.vip.interface = "eth0:1".into();
        s.fencing.device[1].node = "controller03".into();
        s.secrets.corosync_authkey = Secret::new("base64:c2hvcnQ=");
        s.ssh.authorized_keys.push("ssh-foo AAAA".into());
        let problems = s.parse_pair("nib.").expect_err("invalid");
        assert_eq!(
            paths(&problems),
            [
                "nib.cluster.name",
                "nib.node[1].address",
                "nib.network.dns[0]",
                "nib.network.dns[2]",
                "nib.vip.interface",
                "nib.vip.interface",
                "nib.fencing.device",
                "nib.fencing.device[1].node",
                "nib.secrets.corosync_authkey",
                "nib.ssh.authorized_keys[1]",
            ],
            "{problems:#?}"
        );
        assert_eq!(s.problems("nib."), problems);
    }

    #[test]
    fn a_valid_section_does_not_hide_a_bad_one() {
        // Only [secrets] is wrong: no pair, and the one problem names it.
        let mut s = spec(EXAMPLE);
        s.secrets.rabbitmq_openstack_password = Secret::new("it's-a-quote");
        let problems = s.parse_pair("").expect_err("invalid");
        assert_eq!(paths(&problems), ["secrets.rabbitmq_openstack_password"]);
        assert!(problems[0].message.contains(PASSWORD_CHARS), "{problems:?}");
    }

    #[test]
    fn node_id_zero_and_three_nodes_are_both_reported() {
        let mut s = spec(EXAMPLE);
        s.node[0].id = 0;
        let mut third = s.node[1].clone();
        third.name = "controller03".into();
        third.id = 3;
        third.address = "198.18.0.13".into();
        s.node.push(third);
        let problems = s.parse_pair("").expect_err("invalid");
        assert_eq!(paths(&problems), ["node", "node[0].id"], "{problems:#?}");
    }

    const ARBITER: &str = include_str!("../../../tests/fixtures/cluster-arbiter.toml");

    #[test]
    fn the_arbiter_is_parsed_for_each_host_view() {
        let s = spec(ARBITER);
        let pair = s.parse_pair("").expect("controller view");
        let a = pair.arbiter.as_ref().expect("[arbiter]");
        assert_eq!(
            (a.name.as_str(), a.address),
            ("arbiter01", IpAddr::V4(Ipv4Addr::new(198, 18, 0, 13)))
        );
        assert!(a.tls.cluster_key.expose().contains("BEGIN PRIVATE KEY"));
        let arb = s.parse_arbiter("").expect("arbiter view");
        assert_eq!(
            (arb.cluster.as_str(), arb.name.as_str()),
            ("openstack-ctl", "arbiter01")
        );
        assert!(arb.tls.qnetd_key.expose().contains("BEGIN PRIVATE KEY"));
        let (whole, arbiter) = s.parse_whole("").expect("whole file");
        assert_eq!(whole, pair);
        assert_eq!(arbiter, Some(arb));
        // without [arbiter]: no device, as before
        assert_eq!(spec(EXAMPLE).parse_pair("").expect("valid").arbiter, None);
    }

    #[test]
    fn each_seed_validates_with_only_what_its_host_carries() {
        let s = spec(ARBITER);
        let c = s.for_controller();
        let a = c.secrets.arbiter.as_ref().expect("kept");
        assert!(a.qnetd_key.is_empty() && a.qnetd_cert.is_empty());
        c.parse_pair("")
            .expect("a controller's seed is a valid pair");
        assert!(c.parse_whole("").is_err(), "but not the whole file");
        let arb = s.for_arbiter();
        assert!(arb.secrets.values().iter().all(|v| !v.is_empty()));
        assert_eq!(
            arb.secrets.values().len(),
            1,
            "the arbiter's seed holds qnetd's key only"
        );
        assert!(arb.fencing.device.is_empty());
        arb.parse_arbiter("")
            .expect("the arbiter's seed is valid for it");
        let problems = arb.parse_pair("").expect_err("not for a controller");
        assert!(
            paths(&problems).contains(&"secrets.erlang_cookie"),
            "{problems:#?}"
        );
    }

    #[test]
    fn every_arbiter_problem_is_reported_at_once() {
        let mut s = spec(ARBITER);
        let a = s.arbiter.as_mut().expect("[arbiter]");
        a.name = "controller02".into();
        a.address = "198.18.1.13".into();
        let sa = s.secrets.arbiter.as_mut().expect("[secrets.arbiter]");
        sa.cluster_cert = "not a certificate".into();
        sa.qnetd_key = Secret::default();
        let problems = s.parse_whole("").expect_err("invalid");
        assert_eq!(
            paths(&problems),
            [
                "arbiter.name",
                "arbiter.address",
                "secrets.arbiter.qnetd_key",
                "secrets.arbiter.cluster_cert",
            ],
            "{problems:#?}"
        );
        // the controller view does not need qnetd's key
        assert_eq!(
            paths(&s.parse_pair("").expect_err("invalid")),
            [
                "arbiter.name",
                "arbiter.address",
                "secrets.arbiter.cluster_cert"
            ]
        );
        // same address as a node, or the VIP
        let mut s = spec(ARBITER);
        s.arbiter.as_mut().expect("a").address = "198.18.0.10".into();
        let problems = s.parse_pair("").expect_err("the VIP");
        assert!(problems[0].message.contains("is the VIP"), "{problems:?}");
        s.arbiter.as_mut().expect("a").address = "198.18.0.12".into();
        let problems = s.parse_pair("").expect_err("node[1]'s");
        assert!(problems[0].message.contains("node[1]"), "{problems:?}");
        // [arbiter] and [secrets.arbiter] come together
        let mut s = spec(ARBITER);
        s.secrets.arbiter = None;
        assert_eq!(
            paths(&s.parse_pair("").expect_err("missing")),
            ["secrets.arbiter"]
        );
        let mut s = spec(ARBITER);
        s.arbiter = None;
        // (and without the arbiter, its mode "none" is a split brain)
        assert_eq!(
            paths(&s.parse_pair("nib.").expect_err("stray")),
            ["nib.fencing.mode", "nib.secrets.arbiter"]
        );
    }

    #[test]
    fn a_bad_pem_is_named_without_its_value() {
        let mut s = spec(ARBITER);
        let key = s.secrets.arbiter.as_ref().expect("a").cluster_key.clone();
        let broken = key.expose().replace("PRIVATE KEY", "RSA PRIVATE KEY");
        s.secrets.arbiter.as_mut().expect("a").cluster_key = Secret::new(broken.clone());
        let problems = s.parse_pair("").expect_err("invalid");
        assert_eq!(paths(&problems), ["secrets.arbiter.cluster_key"]);
        let line = broken.lines().nth(1).expect("a base64 line");
        assert!(!format!("{problems:?}").contains(line), "{problems:?}");
    }

    #[test]
    fn fencing_none_needs_an_arbiter_or_an_accepted_split_brain() {
        // the example accepts it: valid, and a split brain is possible
        let pair = spec(EXAMPLE).parse_pair("").expect("accepted");
        assert!(pair.split_brain_possible());
        // without accept_split_brain: refused, saying why and the ways out
        let mut s = spec(EXAMPLE);
        s.fencing.accept_split_brain = false;
        let problems = s.parse_pair("nib.").expect_err("refused");
        assert_eq!(paths(&problems), ["nib.fencing.mode"]);
        let m = &problems[0].message;
        for want in [
            "acknowledged writes will be lost",
            "--arbiter NAME=ADDR",
            "mode = \"ipmi\"",
            "fencing.accept_split_brain = true",
        ] {
            assert!(m.contains(want), "{want:?} not in {m}");
        }
        // the whole-file view (nib seed) refuses it too
        assert_eq!(
            paths(&s.parse_whole("").expect_err("refused")),
            ["fencing.mode"]
        );
        // with an arbiter, "none" is fine and no split brain is possible
        let pair = spec(ARBITER).parse_pair("").expect("arbiter decides");
        assert!(!pair.split_brain_possible());
        // with fencing neither
        let pair = spec(IPMI).parse_pair("").expect("ipmi");
        assert!(!pair.split_brain_possible());
        // accept_split_brain with an arbiter or ipmi changes nothing
        let mut s = spec(IPMI);
        s.fencing.accept_split_brain = true;
        assert!(!s.parse_pair("").expect("valid").split_brain_possible());
        // a missing mode says what to choose
        let mut s = spec(EXAMPLE);
        s.fencing.mode = None;
        let problems = s.parse_pair("").expect_err("missing");
        assert!(problems[0].message.contains("[arbiter]"), "{problems:?}");
    }

    #[test]
    fn debug_of_a_pair_prints_no_secret() {
        let s = spec(IPMI);
        let pair = s.parse_pair("").expect("valid");
        let dbg = format!("{pair:?}");
        let b64 = s
            .secrets
            .corosync_authkey
            .expose()
            .trim_start_matches("base64:");
        for v in s
            .secrets
            .values()
            .into_iter()
            .chain([b64, "bmc-pw-one-TEST"])
        {
            assert!(!dbg.contains(v), "Debug leaks a secret");
        }
        assert_eq!(pair.secrets.corosync_authkey.to_string(), "***");
    }
}
