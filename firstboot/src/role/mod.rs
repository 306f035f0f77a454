//! Role data: the shape of `cluster.toml` (builder/doc/DESIGN.md, "Role data"), readable
//! as TOML or as `#cloud-config` YAML with the same tree under `nib:`.
//!
//! Reading rejects unknown keys (serde `deny_unknown_fields`); the parse
//! step ([`pair`]) then turns the tree into a typed [`Pair`], or reports
//! *every* semantic problem with its key path, so an operator fixes the
//! file in one go.

pub mod pair;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use pair::{check_authorized_key, is_hostname};
pub use pair::{ArbiterRole, NodeRole, Pair, Role};

/// A secret value (cookie, authkey, password). `Debug` and `Display` print
/// `***`, so a secret cannot reach a log line or an error by accident; the
/// value is only reachable through [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The plain value, for the renderer that must write it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The whole pair as written (the file's schema), identical for both
/// nodes. [`ClusterSpec::validate`] parses it into a [`Pair`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub cluster: ClusterSection,
    #[serde(default)]
    pub node: Vec<Node>,
    /// The quorum arbiter (corosync-qnetd), when the pair has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arbiter: Option<Arbiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    pub vip: Vip,
    #[serde(default)]
    pub fencing: Fencing,
    #[serde(default)]
    pub secrets: Secrets,
    #[serde(default)]
    pub ssh: Ssh,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub name: String,
    /// Initial MariaDB primary; the node that applies the pacemaker configuration.
    pub bootstrap: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Short hostname; meta-data `local-hostname` picks the node.
    pub name: String,
    /// corosync nodeid and MariaDB server_id (seed 000: unique per node).
    pub id: u32,
    /// Cluster address: corosync ring0, MariaDB, RabbitMQ, memcached.
    pub address: String,
}

/// `[arbiter]`: the third host that runs corosync-qnetd and gives the
/// pair its third vote (firstboot/doc/HA.md, "Arbiter").
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Arbiter {
    /// Its hostname (RFC 1123 label); meta-data `local-hostname` picks it.
    pub name: String,
    /// Where corosync-qdevice on both nodes reaches qnetd (TCP 5403).
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub interface: String,
    pub prefix: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// `ADDRESS/PREFIX`, e.g. `192.168.60.100/24`.
    pub address: String,
    pub interface: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FencingMode {
    Ipmi,
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fencing {
    /// Must be given explicitly: running without fencing is a choice, never a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FencingMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device: Vec<FenceDevice>,
    /// `true` acknowledges that mode "none" without an `[arbiter]` loses
    /// acknowledged writes on a network split (both nodes stay quorate
    /// under `two_node`); without it that combination is refused. Has no
    /// effect with an arbiter or with fencing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub accept_split_brain: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FenceDevice {
    /// The node this device fences.
    pub node: String,
    /// BMC address (IP or hostname).
    pub address: String,
    pub username: String,
    #[serde(default)]
    pub password: Secret,
    /// IPMI 2.0 cipher suite for fence_ipmilan (`cipher`, ipmitool `-C`,
    /// 0–17). Unset: ipmitool picks one from what the BMC offers; set it
    /// for a BMC that does not answer "Get Channel Cipher Suites" (ipmi_sim,
    /// older boards), where the pick costs 14 s per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub erlang_cookie: Secret,
    /// `base64:…`, 128–1024 bytes once decoded.
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub corosync_authkey: Secret,
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub mariadb_replication_password: Secret,
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub rabbitmq_openstack_password: Secret,
    /// `[secrets.arbiter]`: the qnetd/qdevice TLS material, made by `nib
    /// cluster init --arbiter`; given exactly when `[arbiter]` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arbiter: Option<ArbiterSecrets>,
}

/// The arbiter's TLS material, PEM. The CA signed both certificates; its
/// private key is not kept (nothing signs after `nib cluster init`). A
/// controller's seed carries `ca_cert`, `cluster_cert` and `cluster_key`,
/// the arbiter's `ca_cert`, `qnetd_cert` and `qnetd_key`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArbiterSecrets {
    /// The CA certificate ("QNet CA" in both NSS databases).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert: String,
    /// qnetd's server certificate ("QNetd Cert") and its key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qnetd_cert: String,
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub qnetd_key: Secret,
    /// The pair's client certificate ("Cluster Cert", CN = cluster.name),
    /// shared by both controllers as corosync-qdevice-net-certutil shares
    /// it, and its key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_cert: String,
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub cluster_key: Secret,
}

impl Secrets {
    /// Every secret value, for leak checks and masking.
    pub fn values(&self) -> Vec<&str> {
        [
            &self.erlang_cookie,
            &self.corosync_authkey,
            &self.mariadb_replication_password,
            &self.rabbitmq_openstack_password,
        ]
        .into_iter()
        .chain(
            self.arbiter
                .iter()
                .flat_map(|a| [&a.qnetd_key, &a.cluster_key]),
        )
        .map(Secret::expose)
        .filter(|s| !s.is_empty())
        .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorized_keys: Vec<String>,
}

/// One problem found in role data, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.path, self.message)
    }
}

/// Errors reading role data. `Parse` and `Invalid` are the user's input
/// being wrong (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum RoleDataError {
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: invalid role data:\n{}", format_problems(.problems))]
    Invalid {
        source_name: String,
        problems: Vec<Problem>,
    },
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Role data as read from `user-data` or a `cluster.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleData {
    pub spec: ClusterSpec,
    /// cloud-init's `hostname` (cloud-config only).
    pub hostname: Option<String>,
    /// cloud-init's `ssh_authorized_keys` (cloud-config only), added to `ssh.authorized_keys`.
    pub ssh_authorized_keys: Vec<String>,
    /// Top-level cloud-config keys that nib does not act on (reported, not fatal:
    /// a seed may carry keys for other tools).
    pub ignored_keys: Vec<String>,
    /// Key path prefix of the tree: `""` for TOML, `"nib."` for cloud-config.
    pub prefix: &'static str,
}

/// The top level of a `#cloud-config` document that nib reads.
#[derive(Debug, Deserialize)]
struct CloudConfig {
    nib: Option<serde_yaml::Value>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    ssh_authorized_keys: Vec<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_yaml::Value>,
}

impl RoleData {
    /// Parse user-data: `#cloud-config` YAML when it starts so, else TOML.
    /// `source_name` names the file in error messages.
    pub fn parse(text: &str, source_name: &str) -> Result<RoleData, RoleDataError> {
        let first = text.lines().next().unwrap_or("").trim_end();
        if first == "#cloud-config" {
            Self::from_cloud_config(text, source_name)
        } else {
            Self::from_toml(text, source_name)
        }
    }

    pub fn from_toml(text: &str, source_name: &str) -> Result<RoleData, RoleDataError> {
        let spec = ClusterSpec::from_toml(text, source_name)?;
        Ok(RoleData {
            spec,
            hostname: None,
            ssh_authorized_keys: Vec::new(),
            ignored_keys: Vec::new(),
            prefix: "",
        })
    }

    pub fn from_cloud_config(text: &str, source_name: &str) -> Result<RoleData, RoleDataError> {
        let parse_err = |message: String| RoleDataError::Parse {
            source_name: source_name.to_string(),
            message,
        };
        let doc: CloudConfig =
            serde_yaml::from_str(text).map_err(|e| parse_err(scrub_yaml_error(&e)))?;
        let tree = doc.nib.ok_or_else(|| {
            parse_err("key `nib`: missing (the cluster role data goes under `nib:`)".into())
        })?;
        let spec: ClusterSpec = serde_yaml::from_value(tree)
            .map_err(|e| parse_err(format!("under key `nib`: {}", scrub_yaml_error(&e))))?;
        Ok(RoleData {
            spec,
            hostname: doc.hostname,
            ssh_authorized_keys: doc.ssh_authorized_keys,
            ignored_keys: doc.other.into_keys().collect(),
            prefix: "nib.",
        })
    }

    /// The hostname this node takes: cloud-config `hostname`, else meta-data
    /// `local-hostname`.
    pub fn node_name<'a>(&'a self, local_hostname: Option<&'a str>) -> Option<&'a str> {
        self.hostname.as_deref().or(local_hostname)
    }

    /// Every authorized key: `ssh.authorized_keys` then cloud-init's
    /// `ssh_authorized_keys`, duplicates dropped.
    pub fn authorized_keys(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.spec
            .ssh
            .authorized_keys
            .iter()
            .chain(&self.ssh_authorized_keys)
            .filter(|k| seen.insert(k.trim().to_string()))
            .map(|k| k.trim().to_string())
            .collect()
    }

    /// Parse the tree and this node's choice of hostname into its
    /// [`Role`]: one of the pair, or the arbiter (which reads only the
    /// sections an arbiter needs). Returns every problem.
    pub fn validate(
        &self,
        local_hostname: Option<&str>,
        source_name: &str,
    ) -> Result<Role, RoleDataError> {
        let name = self.node_name(local_hostname);
        let is_arbiter = name.is_some()
            && self.spec.arbiter.as_ref().map(|a| a.name.as_str()) == name
            && !self.spec.node.iter().any(|n| Some(n.name.as_str()) == name);
        let (parsed, mut problems) = if is_arbiter {
            match self.spec.parse_arbiter(self.prefix) {
                Ok(a) => (Some(Parsed::Arbiter(a)), Vec::new()),
                Err(problems) => (None, problems),
            }
        } else {
            match self.spec.parse_pair(self.prefix) {
                Ok(pair) => (Some(Parsed::Pair(pair)), Vec::new()),
                Err(problems) => (None, problems),
            }
        };
        if let Some(h) = &self.hostname {
            if !is_hostname(h) {
                problems.push(problem(
                    "hostname",
                    format!("{h:?} is not an RFC 1123 host name label"),
                ));
            }
            if let Some(l) = local_hostname {
                if l != h {
                    problems.push(problem(
                        "hostname",
                        format!("{h:?} differs from meta-data local-hostname {l:?}"),
                    ));
                }
            }
        }
        for (i, k) in self.ssh_authorized_keys.iter().enumerate() {
            if let Err(m) = check_authorized_key(k) {
                problems.push(problem(format!("ssh_authorized_keys[{i}]"), m));
            }
        }
        let mut node = None;
        match name {
            None => problems.push(problem(
                "meta-data.local-hostname",
                "missing: it picks which node of cluster.toml this is".into(),
            )),
            Some(name) => {
                if let Some(Parsed::Pair(pair)) = &parsed {
                    node = pair.node(name).cloned();
                }
                if !is_arbiter && !self.spec.node.iter().any(|n| n.name == name) {
                    let names: Vec<_> = self
                        .spec
                        .node
                        .iter()
                        .map(|n| n.name.as_str())
                        .chain(self.spec.arbiter.iter().map(|a| a.name.as_str()))
                        .collect();
                    problems.push(problem(
                        if self.hostname.is_some() {
                            "hostname"
                        } else {
                            "meta-data.local-hostname"
                        },
                        format!("{name:?} matches no node (nodes: {})", names.join(", ")),
                    ));
                }
            }
        }
        match (parsed, node) {
            (Some(Parsed::Pair(pair)), Some(node)) if problems.is_empty() => {
                Ok(Role::Node(NodeRole {
                    pair,
                    node,
                    authorized_keys: self.authorized_keys(),
                }))
            }
            (Some(Parsed::Arbiter(mut arbiter)), _) if problems.is_empty() => {
                arbiter.authorized_keys = self.authorized_keys();
                Ok(Role::Arbiter(arbiter))
            }
            // no node without a problem: a parsed pair has every node of the tree
            _ => Err(RoleDataError::Invalid {
                source_name: source_name.to_string(),
                problems,
            }),
        }
    }
}

/// What [`RoleData::validate`] parsed before it picked the node.
enum Parsed {
    Pair(Pair),
    Arbiter(ArbiterRole),
}

/// serde_yaml errors may quote the offending scalar; a secret must never
/// reach an error message, so the quoted part is cut.
fn scrub_yaml_error(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    scrub_quoted(&msg)
}

/// toml/yaml messages quote input in backticks or double quotes after
/// "invalid value"/"invalid type" and show source lines; keep the key and
/// the location, drop input snippets.
fn scrub_quoted(msg: &str) -> String {
    let mut out = String::new();
    for line in msg.lines() {
        // toml's snippet lines look like `  |`, `1 | text`, or `  ^^^`
        let t = line.trim_start();
        if t.starts_with('|')
            || t.starts_with('^')
            || t.split_once(" |")
                .is_some_and(|(n, _)| n.trim().parse::<u32>().is_ok())
        {
            continue;
        }
        let mut l = line.to_string();
        // "invalid type: string \"…\", expected …", "invalid value: integer `…`, expected …"
        for marker in ["invalid type: ", "invalid value: "] {
            if let Some(pos) = l.find(marker) {
                let rest = &l[pos + marker.len()..];
                if let Some(exp) = rest.find(", expected") {
                    let (kind, value) = rest[..exp].split_once(' ').unwrap_or((&rest[..exp], ""));
                    if !value.is_empty() {
                        l = format!("{}{marker}{kind} (value hidden){}", &l[..pos], &rest[exp..]);
                    }
                }
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out.trim_end().to_string()
}

impl ClusterSpec {
    pub fn from_toml(text: &str, source_name: &str) -> Result<ClusterSpec, RoleDataError> {
        toml::from_str(text).map_err(|e| {
            let msg = scrub_quoted(e.message());
            let message = match e.span().map(|sp| toml_key_at(text, sp.start)) {
                Some((line, Some(key))) => format!("line {line}, key `{key}`: {msg}"),
                Some((line, None)) => format!("line {line}: {msg}"),
                None => msg,
            };
            RoleDataError::Parse {
                source_name: source_name.to_string(),
                message,
            }
        })
    }

    pub fn to_toml(&self) -> String {
        // Serializing plain data structs cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Parse the cluster-wide tree (no node selection) into the typed
    /// pair, as a controller reads it. Every problem is reported.
    pub fn validate(&self) -> Result<Pair, RoleDataError> {
        self.parse_pair("")
            .map_err(|problems| RoleDataError::Invalid {
                source_name: "cluster.toml".into(),
                problems,
            })
    }

    /// The whole file as `nib seed` reads it: the pair and, with
    /// `[arbiter]`, the arbiter, every secret of both present.
    pub fn validate_whole(&self) -> Result<(Pair, Option<ArbiterRole>), RoleDataError> {
        self.parse_whole("")
            .map_err(|problems| RoleDataError::Invalid {
                source_name: "cluster.toml".into(),
                problems,
            })
    }

    /// What the seed of a controller carries: the file without qnetd's
    /// certificate and key.
    pub fn for_controller(&self) -> ClusterSpec {
        let mut s = self.clone();
        if let Some(a) = &mut s.secrets.arbiter {
            a.qnetd_cert.clear();
            a.qnetd_key = Secret::default();
        }
        s
    }

    /// What the seed of the arbiter carries: no fencing devices (BMC
    /// passwords), none of the pair's secrets, of `[secrets.arbiter]` the
    /// CA and qnetd's certificate and key.
    pub fn for_arbiter(&self) -> ClusterSpec {
        let mut s = self.clone();
        s.fencing.device.clear();
        let arbiter = s.secrets.arbiter.take().map(|a| ArbiterSecrets {
            ca_cert: a.ca_cert,
            qnetd_cert: a.qnetd_cert,
            qnetd_key: a.qnetd_key,
            ..ArbiterSecrets::default()
        });
        s.secrets = Secrets {
            arbiter,
            ..Secrets::default()
        };
        s
    }

    /// The problems of the tree, key paths prefixed with `prefix` (none
    /// when it parses).
    pub fn problems(&self, prefix: &str) -> Vec<Problem> {
        self.parse_whole(prefix).err().unwrap_or_default()
    }
}

/// The 1-based line of byte `offset` and the dotted key written there
/// (table header + key), so a parse error names the key without quoting
/// the value (which may be a secret).
fn toml_key_at(text: &str, offset: usize) -> (usize, Option<String>) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line_no = before.matches('\n').count() + 1;
    let mut table = String::new();
    for l in before.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let t = line.trim();
    let key = if t.starts_with('[') {
        Some(t.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    } else {
        t.split_once('=').map(|(k, _)| {
            let k = k.trim().trim_matches('"');
            if table.is_empty() {
                k.to_string()
            } else {
                format!("{table}.{k}")
            }
        })
    };
    (line_no, key.filter(|k| !k.is_empty()))
}

fn problem(path: impl Into<String>, message: String) -> Problem {
    Problem {
        path: path.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = include_str!("../../../tests/fixtures/cluster.toml");

    #[test]
    fn example_parses_and_validates() {
        let spec = ClusterSpec::from_toml(EXAMPLE, "cluster.toml").expect("parse");
        assert_eq!(spec.node.len(), 2);
        assert_eq!(spec.fencing.mode, Some(FencingMode::None));
        let pair = spec.validate().expect("valid");
        assert_eq!(pair.node(&pair.bootstrap).map(|n| n.id.get()), Some(1));
        assert_eq!(pair.secrets.corosync_authkey.expose().len(), 256);
    }

    #[test]
    fn secret_never_prints() {
        let spec = ClusterSpec::from_toml(EXAMPLE, "cluster.toml").expect("parse");
        let dbg = format!("{spec:?}");
        for v in spec.secrets.values() {
            assert!(!dbg.contains(v), "Debug leaks a secret");
        }
        assert_eq!(format!("{}", spec.secrets.erlang_cookie), "***");
    }

    #[test]
    fn unknown_key_rejected_with_name() {
        let text = EXAMPLE.replace("[vip]\n", "[vip]\nnetmask = 24\n");
        let err = ClusterSpec::from_toml(&text, "c.toml").expect_err("must fail");
        assert!(err.to_string().contains("netmask"), "{err}");
    }

    #[test]
    fn cloud_config_same_tree() {
        let spec = ClusterSpec::from_toml(EXAMPLE, "cluster.toml").expect("parse");
        let yaml = serde_yaml::to_string(&serde_yaml::Mapping::from_iter([(
            serde_yaml::Value::from("nib"),
            serde_yaml::to_value(&spec).expect("to yaml"),
        )]))
        .expect("yaml");
        let text = format!("#cloud-config\nhostname: controller02\nssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINibTestKeyNotForRealUseNibTestKey0000000001 extra@lab\"]\nmanage_etc_hosts: false\n{yaml}");
        let rd = RoleData::parse(&text, "user-data").expect("parse yaml");
        assert_eq!(rd.spec, spec);
        assert_eq!(rd.hostname.as_deref(), Some("controller02"));
        assert_eq!(rd.ignored_keys, vec!["manage_etc_hosts".to_string()]);
        assert_eq!(
            rd.authorized_keys().len(),
            spec.ssh.authorized_keys.len() + 1
        );
        let Role::Node(role) = rd
            .validate(Some("controller02"), "user-data")
            .expect("valid")
        else {
            panic!("controller02 is a node");
        };
        assert_eq!(role.node.name, "controller02");
        assert_eq!(role.authorized_keys, rd.authorized_keys());
        let err = rd
            .validate(Some("controller01"), "user-data")
            .expect_err("mismatch");
        assert!(err.to_string().contains("key `hostname`"), "{err}");
    }

    #[test]
    fn reports_every_problem_with_paths() {
        let mut spec = ClusterSpec::from_toml(EXAMPLE, "cluster.toml").expect("parse");
        spec.node[1].id = 1;
        spec.node[1].address = "198.18.0.11".into();
        spec.vip.address = "198.18.1.10/24".into();
        spec.secrets.erlang_cookie = Secret::new("short");
        spec.fencing.mode = None;
        let paths: Vec<String> = spec.problems("").into_iter().map(|p| p.path).collect();
        for want in [
            "node[1].id",
            "node[1].address",
            "vip.address",
            "secrets.erlang_cookie",
            "fencing.mode",
        ] {
            assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
        }
    }

    #[test]
    fn ipv6_pair_is_valid() {
        let mut spec = ClusterSpec::from_toml(EXAMPLE, "cluster.toml").expect("parse");
        spec.node[0].address = "fd00::11".into();
        spec.node[1].address = "fd00::12".into();
        spec.vip.address = "fd00::10/64".into();
        spec.network = None;
        assert_eq!(spec.problems(""), vec![]);
    }

    #[test]
    fn scrub_hides_every_kind_of_value() {
        assert_eq!(
            scrub_quoted("invalid type: integer `12345678901234567890`, expected a string"),
            "invalid type: integer (value hidden), expected a string"
        );
        assert_eq!(
            scrub_quoted("x: invalid value: string \"s3cr3t, x\", expected u32 at line 3"),
            "x: invalid value: string (value hidden), expected u32 at line 3"
        );
        assert_eq!(
            scrub_quoted("invalid type: sequence, expected a string"),
            "invalid type: sequence, expected a string"
        );
    }

    #[test]
    fn parse_errors_hide_values() {
        let text = EXAMPLE.replace("id = 2", "id = \"s3cr3tvalue\"");
        let err = ClusterSpec::from_toml(&text, "c.toml").expect_err("must fail");
        assert!(!err.to_string().contains("s3cr3tvalue"), "{err}");
    }
}
