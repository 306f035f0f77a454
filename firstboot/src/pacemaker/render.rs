//! Rendering the pacemaker configuration (CIB) of the pair from [`CibParams`].

use std::net::IpAddr;

use anyhow::{Context, Result};
use serde::Serialize;

/// The one template this module fills; embedded so the node binary is
/// self-contained.
const CIB_TEMPLATE: &str = include_str!("../../templates/cluster/cib.xml");

use crate::render::mariadb_paths;
pub use crate::role::Secret;

/// Shown instead of a secret when a rendering is for people to read (the
/// same mask as `Secret`'s `Display`).
pub const MASK: &str = "***";

/// One cluster node as pacemaker and corosync know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CibNode {
    /// Hostname = corosync node name = pacemaker uname.
    pub name: String,
    /// corosync nodeid (also the MariaDB server_id).
    pub id: u32,
    /// Cluster address; replicas connect to the primary here.
    pub address: IpAddr,
}

/// The service address that follows the MariaDB primary (seed 002).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CibVip {
    pub address: IpAddr,
    pub prefix: u8,
    pub nic: String,
}

/// How the cluster fences a node that stops answering (`fence_ipmilan`,
/// one BMC per node, or none: an explicit choice in the role data, warned
/// about): the parsed role data's own types.
pub use crate::role::pair::{FenceDevice, Fencing};

/// fence_ipmilan speaks IPMI v2.0 (lanplus): every BMC of the last decade does.
const LANPLUS: u8 = 1;

/// Everything the CIB of the pair is made of. Built from the parsed role
/// data by `CibParams::new`, or directly in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CibParams {
    pub nodes: Vec<CibNode>,
    /// The node that applies the configuration and is the first primary.
    pub bootstrap: String,
    pub vip: CibVip,
    pub fencing: Fencing,
    /// corosync has a quorum device (the role data's `[arbiter]`): only one
    /// partition can be quorate, so only one can fence, and no fence race
    /// needs a delay.
    pub quorum_device: bool,
    pub replication_user: String,
    pub replication_password: Secret,
}

/// Settings that trade start/failover speed against load. Chosen here, not
/// in role data; listed so the end-to-end figures can be explained.
pub mod timings {
    /// The 20 s default dominates cluster start (~24 s vs ~7 s with 2 s:
    /// firstboot/doc/HA.md, "pacemaker").
    /// pacemaker starts after corosync, which is already quorate with both
    /// nodes (two_node's wait_for_all), so its start-up wait for a DC only
    /// delays the election (measured in the e2e pair: ~3 s from "Quorum
    /// acquired" to the DC with 2 s; with 1 s, "Election Trigger just
    /// popped | time=1000ms" 2.0 s after S_PENDING; the VIP comes after
    /// it). 500 ms: a running DC offers a starting node its join as soon
    /// as the node's controller appears (sub-second on a LAN); if the offer
    /// came later, the node would only call an election that the running DC
    /// wins.
    pub const DC_DEADTIME: &str = "500ms";
    /// Keeps resources where they run when a node comes back (no flapping).
    pub const RESOURCE_STICKINESS: u32 = 100;
    /// The unpromoted monitor gives a healthy replica its promotion score
    /// (ocf:nib:mariadb), so the interval is how soon after replication
    /// starts the replica is ready to take over; the heartbeat agent also
    /// elects the first primary of a pair in it.
    pub const MARIADB_MONITOR_UNPROMOTED: &str = "1s";
    pub const MARIADB_MONITOR_PROMOTED: &str = "5s";
    /// ocf:nib:rabbitmq's start only queues the unit's start (a broker boot
    /// held every later transition, MariaDB's promote and the VIP with it,
    /// for its 21 s on the loaded e2e pair).
    pub const RABBITMQ_START_TIMEOUT: &str = "20s";
    /// `rabbitmqctl stop` of the unit's ExecStop, within systemd's default
    /// 90 s stop timeout.
    pub const RABBITMQ_STOP_TIMEOUT: &str = "120s";
    /// The monitor is `systemctl is-active` (no Erlang VM, unlike
    /// `rabbitmqctl`, about a CPU-second each here).
    pub const RABBITMQ_MONITOR: &str = "10s";
    /// After a failed start or stop pacemaker tries the node again this
    /// long after, instead of never (start-failure-is-fatal).
    pub const RABBITMQ_FAILURE_TIMEOUT: &str = "60s";
    /// Fence race of a pair without an arbiter (two_node: both halves of
    /// a split stay quorate and each fences the other). pacemaker adds
    /// `pcmk_delay_base` of the device that fences the target to
    /// `priority-fencing-delay` when the target has the highest priority
    /// (the promoted MariaDB: base priority + 1), and the priority delay
    /// alone is 0 when both nodes have the same priority. With the static
    /// delay on the bootstrap node's device only, the bootstrap node B
    /// and the other node O wait:
    ///
    /// | promoted on | B shoots O after | O shoots B after | winner, by |
    /// |---|---|---|---|
    /// | B | 0 | priority + base = 10 s | B, 10 s |
    /// | O | priority = 10 s | base = 5 s | O, 5 s |
    /// | neither (equal priority) | 0 | base = 5 s | B, 5 s |
    ///
    /// so the side running the primary wins, by at least the base delay
    /// (pacemaker's documentation: the priority delay "safely twice" the
    /// base). A static delay, not `pcmk_delay_max`: the random one only
    /// breaks a symmetric tie, and here nothing is symmetric. 5 s is the
    /// margin the winner has to get its power-off executed: from
    /// fence_ipmilan's start to the power cut took 0.40–0.52 s against
    /// ipmi_sim (tests/e2e/tests/bmc.rs), and ipmitool resends a lost
    /// datagram after 1 s, so 5 s covers a slow BMC and a few losses. The cost is failover time after a real crash of the primary
    /// (the survivor waits 10 or 15 s before it fences, then promotes).
    /// Pacemaker 2.0.3 (focal) has no priority-fencing-delay (2.0.4): it
    /// ignores the property and the bootstrap node always wins.
    pub const FENCE_DELAY_BASE: &str = "5s";
    pub const PRIORITY_FENCING_DELAY: &str = "10s";
    /// The MariaDB clone's `priority` (its promoted instance counts 2).
    pub const MARIADB_PRIORITY: u32 = 1;
}

/// Where the image installs ocf:nib:rabbitmq (layers/rabbitmq/files/).
pub const RABBITMQ_AGENT: &str = "/usr/lib/ocf/resource.d/nib/rabbitmq";

/// Where the image installs the pacemaker alert agent that tells RabbitMQ
/// about a lost peer (layers/rabbitmq/files/).
pub const RABBITMQ_ALERT_AGENT: &str = "/usr/lib/nib/rabbitmq-peer-lost-alert";

/// Ids of the CIB objects nib creates; `status` and the primary seeding
/// look them up.
pub mod ids {
    pub const VIP: &str = "vip";
    pub const MARIADB: &str = "mariadb";
    pub const MARIADB_CLONE: &str = "mariadb-clone";
    pub const RABBITMQ: &str = "rabbitmq";
    pub const RABBITMQ_CLONE: &str = "rabbitmq-clone";
    pub const RABBITMQ_ALERT: &str = "nib-rabbitmq-peer-lost";
    pub const MANAGED_TAG: &str = "nib-managed";
    pub fn fence_device(node: &str) -> String {
        format!("fence-{node}")
    }
}

/// Whether secrets appear in a rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// For the cluster itself.
    Include,
    /// For review (`--print-cib` without `--show-secrets`).
    Mask,
}

#[derive(Serialize)]
struct NodeCtx<'a> {
    name: &'a str,
    id: u32,
    address: String,
}

#[derive(Serialize)]
struct FenceCtx<'a> {
    id: String,
    node: &'a str,
    address: &'a str,
    username: &'a str,
    password: &'a str,
    lanplus: u8,
    cipher: Option<u8>,
    delay_base: Option<&'static str>,
}

#[derive(Serialize)]
struct VipCtx<'a> {
    address: String,
    prefix: u8,
    nic: &'a str,
}

#[derive(Serialize)]
struct RabbitMqCtx<'a> {
    id: &'a str,
    clone: &'a str,
    start_timeout: &'a str,
    stop_timeout: &'a str,
    monitor: &'a str,
    failure_timeout: &'a str,
    alert_id: &'a str,
    alert_path: &'a str,
}

#[derive(Serialize)]
struct MariaDbCtx<'a> {
    binary: &'a str,
    config: &'a str,
    datadir: &'a str,
    pid: &'a str,
    socket: &'a str,
    log: &'a str,
    replication_user: &'a str,
    replication_passwd: &'a str,
    monitor_promoted: &'a str,
    monitor_unpromoted: &'a str,
}

/// XML attribute escaping for every `{{ }}` in the template (tera's default
/// HTML escaping would also rewrite `/`).
fn escape_xml(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

impl CibParams {
    /// Whether pacemaker will fence (stonith-enabled).
    pub fn fencing_enabled(&self) -> bool {
        matches!(self.fencing, Fencing::Ipmi(_))
    }

    /// Whether both halves of a split can fence each other (fencing
    /// without a quorum device), so the fence devices need delays.
    pub fn fence_race(&self) -> bool {
        self.fencing_enabled() && !self.quorum_device
    }

    /// Whether a split can leave both nodes quorate and writable: no
    /// fencing and no quorum device (role data that accepts it).
    pub fn split_brain_possible(&self) -> bool {
        !self.fencing_enabled() && !self.quorum_device
    }

    /// The values nib must never print.
    pub fn secrets(&self) -> Vec<&str> {
        let mut out = vec![self.replication_password.expose()];
        if let Fencing::Ipmi(devices) = &self.fencing {
            out.extend(devices.iter().map(|d| d.password.expose()));
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// Ids of every resource, constraint and tag nib owns, as listed in the
    /// `nib-managed` tag: what a later apply may replace or remove.
    pub fn managed_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let devices: &[FenceDevice] = match &self.fencing {
            Fencing::Ipmi(d) => d,
            Fencing::None => &[],
        };
        for dev in devices {
            ids.push(ids::fence_device(&dev.node));
        }
        ids.push(ids::VIP.to_string());
        ids.push(ids::MARIADB_CLONE.to_string());
        ids.push(ids::RABBITMQ_CLONE.to_string());
        for dev in devices {
            let id = ids::fence_device(&dev.node);
            ids.push(format!("location-{id}-avoids-{}", dev.node));
        }
        ids.push("colocation-vip-with-mariadb-promoted".to_string());
        ids.push("order-mariadb-promote-then-vip".to_string());
        ids
    }

    /// The full CIB document (configuration plus an empty status), as
    /// `crm_verify --xml-file` and `--print-cib` want it.
    pub fn render(&self, secrets: Secrets) -> Result<String> {
        let mask = |s: &'_ Secret| -> String {
            match secrets {
                Secrets::Include => s.expose().to_string(),
                Secrets::Mask => MASK.to_string(),
            }
        };
        let nodes: Vec<NodeCtx> = self
            .nodes
            .iter()
            .map(|n| NodeCtx {
                name: &n.name,
                id: n.id,
                address: n.address.to_string(),
            })
            .collect();
        let passwords: Vec<String> = match &self.fencing {
            Fencing::Ipmi(d) => d.iter().map(|d| mask(&d.password)).collect(),
            Fencing::None => Vec::new(),
        };
        let fence_devices: Vec<FenceCtx> = match &self.fencing {
            Fencing::Ipmi(d) => d
                .iter()
                .zip(&passwords)
                .map(|(d, password)| FenceCtx {
                    id: ids::fence_device(&d.node),
                    node: &d.node,
                    address: &d.address,
                    username: &d.username,
                    password,
                    lanplus: LANPLUS,
                    cipher: d.cipher,
                    delay_base: self
                        .fence_race()
                        .then_some(timings::FENCE_DELAY_BASE)
                        .filter(|_| d.node == self.bootstrap),
                })
                .collect(),
            Fencing::None => Vec::new(),
        };
        let replication_passwd = mask(&self.replication_password);
        let node_list = self
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(" ");

        let mut ctx = tera::Context::new();
        ctx.insert("stonith_enabled", &self.fencing_enabled());
        ctx.insert(
            "priority_fencing_delay",
            &self.fence_race().then_some(timings::PRIORITY_FENCING_DELAY),
        );
        ctx.insert("mariadb_priority", &timings::MARIADB_PRIORITY);
        ctx.insert("dc_deadtime", timings::DC_DEADTIME);
        ctx.insert("resource_stickiness", &timings::RESOURCE_STICKINESS);
        ctx.insert("nodes", &nodes);
        ctx.insert("node_list", &node_list);
        ctx.insert("fence_devices", &fence_devices);
        ctx.insert(
            "vip",
            &VipCtx {
                address: self.vip.address.to_string(),
                prefix: self.vip.prefix,
                nic: &self.vip.nic,
            },
        );
        ctx.insert(
            "mariadb",
            &MariaDbCtx {
                binary: mariadb_paths::BINARY,
                config: mariadb_paths::CONFIG,
                datadir: mariadb_paths::DATADIR,
                pid: mariadb_paths::PID,
                socket: mariadb_paths::SOCKET,
                log: mariadb_paths::LOG,
                replication_user: &self.replication_user,
                replication_passwd: &replication_passwd,
                monitor_promoted: timings::MARIADB_MONITOR_PROMOTED,
                monitor_unpromoted: timings::MARIADB_MONITOR_UNPROMOTED,
            },
        );
        ctx.insert(
            "rabbitmq",
            &RabbitMqCtx {
                id: ids::RABBITMQ,
                clone: ids::RABBITMQ_CLONE,
                start_timeout: timings::RABBITMQ_START_TIMEOUT,
                stop_timeout: timings::RABBITMQ_STOP_TIMEOUT,
                monitor: timings::RABBITMQ_MONITOR,
                failure_timeout: timings::RABBITMQ_FAILURE_TIMEOUT,
                alert_id: ids::RABBITMQ_ALERT,
                alert_path: RABBITMQ_ALERT_AGENT,
            },
        );
        ctx.insert("managed", &self.managed_ids());

        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec!["cib.xml"]);
        tera.set_escape_fn(escape_xml);
        tera.add_raw_template("cib.xml", CIB_TEMPLATE)
            .context("parsing the embedded template cluster/cib.xml")?;
        // The error of a failed render never contains context values, so
        // no secret can reach it.
        let xml = tera
            .render("cib.xml", &ctx)
            .context("rendering cluster/cib.xml")?;
        // The template's leading comment leaves a blank line.
        Ok(xml.trim_start().to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_xml_specials() {
        assert_eq!(
            escape_xml("a&b<c>d\"e'f/g"),
            "a&amp;b&lt;c&gt;d&quot;e&apos;f/g"
        );
    }
}
