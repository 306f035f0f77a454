//! `nib-firstboot status`: one screen saying what first boot applied, the
//! cluster's state, where the VIP and the MariaDB primary are, and what is
//! wrong (no fencing, replication stopped, failed actions).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::node_state::{self, NodeRecord, INSTANCE_ID_PATH};
use crate::pacemaker::quorum::parse_quorumtool;
use crate::pacemaker::render::{ids, CibParams};
use crate::pacemaker::state::ClusterState;
use crate::pacemaker::tools::{parse_batch, ClusterTools, SystemTools};
use crate::pacemaker::NO_FENCING_WARNING;

/// `nib-firstboot status`.
pub fn status_command(seed: Option<&Path>) -> Result<(String, Vec<String>)> {
    let first_boot = NodeRecord::read(Path::new("/"));
    // Status must work on a half-configured node: role data is optional.
    // It describes this machine, so its hostname names the node.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty());
    let (params, node) = match node_state::load_pair(seed) {
        Ok((pair, node)) => (Some(CibParams::new(&pair)), hostname.unwrap_or(node)),
        Err(_) => (
            None,
            hostname
                .or_else(|| first_boot.node.clone())
                .unwrap_or_default(),
        ),
    };
    let secrets: Vec<&str> = params.as_ref().map(|p| p.secrets()).unwrap_or_default();
    let tools = SystemTools::new(&secrets);
    Ok(report(&first_boot, params.as_ref(), &node, &tools))
}

/// `YYYY-MM-DD HH:MM:SS UTC` without a date crate (days-to-civil, Howard
/// Hinnant's algorithm).
pub fn format_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The status screen. `params` is None when no role data is recorded
/// (first boot has not run); `local` is this node's name.
pub fn report(
    first_boot: &NodeRecord,
    params: Option<&CibParams>,
    local: &str,
    tools: &dyn ClusterTools,
) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut warnings = Vec::new();

    let _ = writeln!(out, "node        {local}");
    match (&first_boot.instance_id, first_boot.applied_at) {
        (Some(id), Some(at)) => {
            let _ = writeln!(
                out,
                "first boot  instance-id {id}, applied {}",
                format_utc(at)
            );
        }
        (Some(id), None) => {
            let _ = writeln!(out, "first boot  instance-id {id}");
        }
        (None, _) => {
            let _ = writeln!(out, "first boot  not applied ({INSTANCE_ID_PATH} missing)");
            warnings.push("first boot has not completed on this node".to_string());
        }
    }

    match tools.quorum_status() {
        Ok(q) => {
            let v = parse_quorumtool(&q);
            let ids: Vec<String> = v.members.iter().map(u32::to_string).collect();
            let _ = writeln!(
                out,
                "corosync    {}, members (node ids) {}",
                if v.quorate { "quorate" } else { "NOT quorate" },
                ids.join(" ")
            );
            if let Some(p) = params {
                if v.members.len() < p.nodes.len() {
                    warnings.push(format!(
                        "only {} of {} nodes in the corosync membership",
                        v.members.len(),
                        p.nodes.len()
                    ));
                }
            }
        }
        Err(_) => {
            let _ = writeln!(out, "corosync    not quorate or not running");
            warnings.push("corosync is not quorate (or not running) on this node".into());
        }
    }

    let state = tools
        .crm_mon_xml()
        .ok()
        .and_then(|x| ClusterState::parse(&x).ok());
    let Some(st) = state else {
        let _ = writeln!(out, "pacemaker   not running");
        warnings.push("pacemaker does not answer on this node".into());
        return finish(out, warnings, params);
    };
    let online: Vec<&str> = st
        .nodes
        .iter()
        .filter(|(_, up)| *up)
        .map(|(n, _)| n.as_str())
        .collect();
    let offline: Vec<&str> = st
        .nodes
        .iter()
        .filter(|(_, up)| !*up)
        .map(|(n, _)| n.as_str())
        .collect();
    let _ = writeln!(
        out,
        "pacemaker   DC {}, online: {}{}",
        st.dc.as_deref().unwrap_or("none"),
        if online.is_empty() {
            "-".to_string()
        } else {
            online.join(" ")
        },
        if offline.is_empty() {
            String::new()
        } else {
            format!(", OFFLINE: {}", offline.join(" "))
        }
    );
    if !offline.is_empty() {
        warnings.push(format!("node(s) offline: {}", offline.join(", ")));
    }

    let vip = params
        .map(|p| format!("{}/{}", p.vip.address, p.vip.prefix))
        .unwrap_or_else(|| ids::VIP.to_string());
    let _ = writeln!(
        out,
        "VIP         {vip} on {}",
        if st.vip_nodes.is_empty() {
            "no node".to_string()
        } else {
            st.vip_nodes.join(", ")
        }
    );
    match st.vip_nodes.len() {
        1 => {}
        0 => warnings.push("the VIP is not running".into()),
        n => warnings.push(format!("the VIP runs on {n} nodes")),
    }

    let primaries = st.primaries();
    let replicas = st.replicas();
    let _ = writeln!(
        out,
        "MariaDB     primary {}, replica {}",
        if primaries.is_empty() {
            "none".to_string()
        } else {
            primaries.join(", ")
        },
        if replicas.is_empty() {
            "none".to_string()
        } else {
            replicas.join(", ")
        }
    );
    if primaries.is_empty() {
        warnings.push("no MariaDB primary".into());
    }
    if !primaries.is_empty()
        && st.vip_nodes.first().map(String::as_str) != primaries.first().copied()
    {
        warnings.push("the VIP is not on the MariaDB primary".into());
    }

    // Replication, seen from this node's own MariaDB.
    if replicas.contains(&local) {
        match tools
            .local_sql("SHOW SLAVE STATUS")
            .map(|o| parse_batch(&o).pop())
        {
            Ok(Some(row)) => {
                let get = |k: &str| row.get(k).map(String::as_str).unwrap_or("?");
                let _ = writeln!(
                    out,
                    "replication from {}: IO {}, SQL {}, GTID {}, {} s behind",
                    get("Master_Host"),
                    get("Slave_IO_Running"),
                    get("Slave_SQL_Running"),
                    get("Gtid_IO_Pos"),
                    get("Seconds_Behind_Master")
                );
                // What ocf:nib:mariadb's monitor fails (issue 17): a thread
                // that is not running or has an error; an IO thread
                // Connecting is failed by the agent only after its bound.
                let thread = |name: &str, running: &str, errno: &str, error: &str| {
                    let state = get(running);
                    let errno = get(errno);
                    let failed = state != "Yes" || !matches!(errno, "0" | "?" | "");
                    failed.then(|| {
                        let error = get(error);
                        let mut w = format!("replication {name} thread {state} on this node");
                        if !matches!(errno, "0" | "?" | "") {
                            let _ = write!(w, ": error {errno}");
                            if !error.is_empty() && error != "?" {
                                let _ = write!(w, " {error}");
                            }
                        }
                        w
                    })
                };
                let failed: Vec<String> = [
                    thread("IO", "Slave_IO_Running", "Last_IO_Errno", "Last_IO_Error"),
                    thread(
                        "SQL",
                        "Slave_SQL_Running",
                        "Last_SQL_Errno",
                        "Last_SQL_Error",
                    ),
                ]
                .into_iter()
                .flatten()
                .collect();
                if !failed.is_empty() {
                    warnings.push(format!("replication stopped: {}", failed.join("; ")));
                }
            }
            Ok(None) => warnings.push("replication not configured on this replica".into()),
            Err(_) => warnings.push("cannot query the local MariaDB".into()),
        }
    } else if primaries.contains(&local) {
        match tools
            .local_sql(
                // (not beside COUNT(*) in one SELECT: with no matching row
                // MariaDB 10.11 gave 0 for the variable there, measured)
                "SELECT (SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%') AS n, @@global.rpl_semi_sync_master_enabled AS semisync",
            )
            .map(|o| parse_batch(&o).pop())
        {
            Ok(Some(row)) => {
                let n = row.get("n").cloned().unwrap_or_default();
                let semisync = row.get("semisync").map(String::as_str).unwrap_or("?");
                let _ = writeln!(
                    out,
                    "replication {n} replica(s) connected to this primary, semi-sync {}",
                    match semisync {
                        "1" => "on",
                        "0" => "off",
                        _ => "?",
                    }
                );
                if n == "0" && !replicas.is_empty() {
                    warnings.push("replication stopped: no replica connected".into());
                }
                // ocf:nib:mariadb turns semi-sync off once the peer is
                // declared gone, and on when a replica is back
                if semisync == "0" {
                    warnings.push(
                        "semi-sync off on the primary: commits are acknowledged without a replica (the peer was declared gone)".into(),
                    );
                }
            }
            _ => warnings.push("cannot query the local MariaDB".into()),
        }
    }

    // With role data, `finish` words the no-fencing warning; here only
    // what the live cluster says beyond it.
    match (st.stonith_enabled, params.map(CibParams::fencing_enabled)) {
        (Some(false), None) => warnings.push("fencing (stonith) is disabled".into()),
        (Some(false), Some(true)) => warnings.push(
            "role data asks for fencing but stonith-enabled is false: nib-cluster.service has not applied the configuration".into(),
        ),
        _ => {}
    }
    for f in &st.failed {
        warnings.push(format!(
            "failed action {} on {}: {}",
            f.op, f.node, f.reason
        ));
    }
    finish(out, warnings, params)
}

fn finish(
    mut out: String,
    mut warnings: Vec<String>,
    params: Option<&CibParams>,
) -> (String, Vec<String>) {
    if let Some(p) = params {
        if p.split_brain_possible() {
            warnings.insert(0, NO_FENCING_WARNING.to_string());
        }
    }
    if warnings.is_empty() {
        out.push_str("warnings    none\n");
    } else {
        for w in &warnings {
            let _ = writeln!(out, "WARNING     {w}");
        }
    }
    (out, warnings)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pacemaker::diff::CibOp;
    use crate::pacemaker::render::{CibNode, CibVip, Fencing, Secret};
    use anyhow::anyhow;

    struct Fake {
        crm_mon: &'static str,
        slave_status: &'static str,
    }

    impl ClusterTools for Fake {
        fn quorum_status(&self) -> Result<String> {
            Ok("Quorate:          Yes\n    Nodeid      Votes Name\n         1          1 a\n         2          1 b\n".into())
        }
        fn cib_query(&self) -> Result<String> {
            Err(anyhow!("unused"))
        }
        fn cib_apply(&self, _: &CibOp) -> Result<()> {
            Err(anyhow!("unused"))
        }
        fn crm_mon_xml(&self) -> Result<String> {
            Ok(self.crm_mon.into())
        }
        fn node_attribute(&self, _: &str, _: &str) -> Result<Option<String>> {
            Ok(None)
        }
        fn set_node_attribute(&self, _: &str, _: &str, _: &str) -> Result<()> {
            Ok(())
        }
        fn private_attribute(&self, _: &str, _: &str) -> Result<Option<String>> {
            Ok(None)
        }
        fn local_sql(&self, _: &str) -> Result<String> {
            Ok(self.slave_status.into())
        }
    }

    const MON: &str = r#"<pacemaker-result><summary><current_dc present="true" name="controller01" with_quorum="true"/><cluster_options stonith-enabled="false"/></summary>
<nodes><node name="controller01" online="true"/><node name="controller02" online="true"/></nodes>
<resources><resource id="vip" active="true"><node name="controller01"/></resource>
<clone id="mariadb-clone"><resource id="mariadb" role="Promoted" active="true"><node name="controller01"/></resource>
<resource id="mariadb" role="Unpromoted" active="true"><node name="controller02"/></resource></clone></resources></pacemaker-result>"#;

    fn params() -> CibParams {
        CibParams {
            nodes: vec![
                CibNode {
                    name: "controller01".into(),
                    id: 1,
                    address: "198.18.0.11".parse().unwrap(),
                },
                CibNode {
                    name: "controller02".into(),
                    id: 2,
                    address: "198.18.0.12".parse().unwrap(),
                },
            ],
            bootstrap: "controller01".into(),
            vip: CibVip {
                address: "198.18.0.10".parse().unwrap(),
                prefix: 24,
                nic: "eth0".into(),
            },
            fencing: Fencing::None,
            quorum_device: false,
            replication_user: "nib_repl".into(),
            replication_password: Secret::new("s3cret-pw"),
        }
    }

    #[test]
    fn healthy_replica_shows_roles_and_only_the_fencing_warning() {
        let fake = Fake {
            crm_mon: MON,
            slave_status: "Master_Host\tSlave_IO_Running\tSlave_SQL_Running\tGtid_IO_Pos\tSeconds_Behind_Master\ncontroller01\tYes\tYes\t0-1-3\t0\n",
        };
        let fb = NodeRecord {
            instance_id: Some("iid-1".into()),
            applied_at: Some(UNIX_EPOCH + std::time::Duration::from_secs(1_795_820_000)),
            node: Some("controller02".into()),
        };
        let (out, warnings) = report(&fb, Some(&params()), "controller02", &fake);
        assert!(
            out.contains("instance-id iid-1, applied 2026-11-27 "),
            "{out}"
        );
        assert!(
            out.contains("VIP         198.18.0.10/24 on controller01"),
            "{out}"
        );
        assert!(
            out.contains("MariaDB     primary controller01, replica controller02"),
            "{out}"
        );
        assert!(out.contains("IO Yes, SQL Yes, GTID 0-1-3"), "{out}");
        assert_eq!(warnings, [NO_FENCING_WARNING.to_string()], "{out}");
        assert!(!out.contains("s3cret-pw"));
    }

    #[test]
    fn stopped_replication_is_a_warning() {
        let fake = Fake {
            crm_mon: MON,
            slave_status: "Master_Host\tSlave_IO_Running\tSlave_SQL_Running\tLast_IO_Error\ncontroller01\tNo\tYes\terror connecting to master\n",
        };
        let (out, warnings) = report(
            &NodeRecord::default(),
            Some(&params()),
            "controller02",
            &fake,
        );
        assert!(
            warnings
                .iter()
                .any(|w| w == "replication stopped: replication IO thread No on this node"),
            "{out}"
        );
        assert!(warnings
            .iter()
            .any(|w| w.contains("first boot has not completed")));
    }

    #[test]
    fn replication_errors_name_the_thread_even_while_it_runs() {
        let fake = Fake {
            crm_mon: MON,
            slave_status: "Master_Host\tSlave_IO_Running\tSlave_SQL_Running\tLast_IO_Errno\tLast_IO_Error\tLast_SQL_Errno\tLast_SQL_Error\n198.18.0.11\tConnecting\tYes\t2003\terror connecting to master\t1062\tDuplicate entry\n",
        };
        let (out, warnings) = report(
            &NodeRecord::default(),
            Some(&params()),
            "controller02",
            &fake,
        );
        assert!(
            warnings.iter().any(|w| w
                == "replication stopped: replication IO thread Connecting on this node: error 2003 error connecting to master; replication SQL thread Yes on this node: error 1062 Duplicate entry"),
            "{out}\n{warnings:?}"
        );
    }

    #[test]
    fn a_primary_without_semi_sync_is_a_warning() {
        let fake = Fake {
            crm_mon: MON,
            slave_status: "n\tsemisync\n0\t0\n",
        };
        let (out, warnings) = report(
            &NodeRecord::default(),
            Some(&params()),
            "controller01",
            &fake,
        );
        assert!(
            out.contains("replication 0 replica(s) connected to this primary, semi-sync off"),
            "{out}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("semi-sync off on the primary")),
            "{out}"
        );
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400 + 3661);
        assert_eq!(format_utc(t), "2000-02-29 01:01:01 UTC");
    }
}
