//! Readers for the tools' output the checks rely on. Kept apart from the
//! checks so each is unit-tested against real output captured here.

use anyhow::{Context, Result};

/// `ip -4 -o addr show dev X` → ["198.18.0.11/24", …]
pub fn ip_addr_show(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.find(|w| *w == "inet")?;
            it.next().map(str::to_string)
        })
        .collect()
}

/// The fields of `corosync-quorumtool -s` that say whether the pair is whole.
#[derive(Debug, PartialEq, Eq)]
pub struct Quorum {
    pub quorate: bool,
    pub nodes: u32,
    pub total_votes: u32,
    pub expected_votes: u32,
    /// `Flags:` names `Qdevice` and the membership lists the quorum
    /// device's vote (`0  1  Qdevice`): qdevice is connected to qnetd and
    /// votes.
    pub qdevice_vote: bool,
}

pub fn corosync_quorum(out: &str) -> Result<Quorum> {
    let field = |name: &str| {
        out.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
            .with_context(|| format!("no `{name}:` in corosync-quorumtool output"))
    };
    let num = |name: &str| -> Result<u32> {
        let v = field(name)?;
        v.split_whitespace()
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("`{name}: {v}` is not a number"))
    };
    let flags = field("Flags").unwrap_or_default();
    let device_votes = out.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        // "         0          1            Qdevice": node id 0, 1 vote
        w.len() == 3 && w[0] == "0" && w[1] != "0" && w[2] == "Qdevice"
    });
    Ok(Quorum {
        quorate: field("Quorate")?.starts_with("Yes"),
        nodes: num("Nodes")?,
        total_votes: num("Total votes")?,
        expected_votes: num("Expected votes")?,
        qdevice_vote: flags.split_whitespace().any(|f| f == "Qdevice") && device_votes,
    })
}

/// One cluster as `corosync-qnetd-tool -l` lists it: its name and, per
/// connected node, its id and qnetd's vote for it as printed (`ACK (ACK)`,
/// `No change (ACK)`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QnetdCluster {
    pub name: String,
    pub nodes: Vec<(u32, String)>,
}

/// `corosync-qnetd-tool -l` (corosync-qnetd 3.0):
///
/// ```text
/// Cluster "openstack-ctl":
///     Algorithm:          Fifty-Fifty split
///     Tie-breaker:        Node with lowest node ID
///     Node ID 1:
///         Client address:         ::ffff:198.18.0.11:43040
///         Configured node list:   1, 2
///         Membership node list:   1, 2
///         Vote:                   ACK (ACK)
/// ```
pub fn qnetd_clusters(out: &str) -> Vec<QnetdCluster> {
    let mut clusters: Vec<QnetdCluster> = Vec::new();
    for l in out.lines() {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("Cluster \"") {
            if let Some(name) = rest.strip_suffix("\":") {
                clusters.push(QnetdCluster {
                    name: name.to_string(),
                    nodes: Vec::new(),
                });
            }
        } else if let Some(id) = t.strip_prefix("Node ID ").and_then(|r| r.strip_suffix(':')) {
            if let (Some(c), Ok(id)) = (clusters.last_mut(), id.trim().parse()) {
                c.nodes.push((id, String::new()));
            }
        } else if let Some(v) = t.strip_prefix("Vote:") {
            if let Some(n) = clusters.last_mut().and_then(|c| c.nodes.last_mut()) {
                n.1 = v.trim().to_string();
            }
        }
    }
    clusters
}

/// The JSON document in rabbitmqctl's output, which may print notices
/// before it: from the first `open` (`{` or `[`) on.
fn rabbitmqctl_json(out: &str, open: char, what: &str) -> Result<serde_json::Value> {
    let start = out
        .find(open)
        .with_context(|| format!("no JSON in rabbitmqctl {what} output"))?;
    serde_json::from_str(&out[start..]).with_context(|| format!("parsing rabbitmqctl {what} JSON"))
}

/// `rabbitmqctl cluster_status --formatter json` → running node names.
pub fn rabbit_running_nodes(out: &str) -> Result<Vec<String>> {
    let v = rabbitmqctl_json(out, '{', "cluster_status")?;
    let nodes = v
        .get("running_nodes")
        .and_then(|n| n.as_array())
        .context("no running_nodes in rabbitmqctl cluster_status")?;
    Ok(nodes
        .iter()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect())
}

/// `rabbitmqctl list_vhosts name cluster_state --formatter json` → the
/// state of virtual host `vhost` on each node (`rabbit@x` → `running`).
pub fn rabbit_vhost_states(out: &str, vhost: &str) -> Result<Vec<(String, String)>> {
    let v = rabbitmqctl_json(out, '[', "list_vhosts")?;
    let entry = v
        .as_array()
        .context("rabbitmqctl list_vhosts: not a JSON array")?
        .iter()
        .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(vhost))
        .with_context(|| format!("no virtual host `{vhost}` in rabbitmqctl list_vhosts"))?;
    let states = entry
        .get("cluster_state")
        .and_then(|c| c.as_object())
        .with_context(|| format!("no cluster_state for virtual host `{vhost}`"))?;
    Ok(states
        .iter()
        .map(|(node, st)| (node.clone(), st.as_str().unwrap_or_default().to_string()))
        .collect())
}

/// The (soft, hard) limits on open files from `/proc/PID/limits`.
pub fn open_files_limits(limits: &str) -> Result<(u64, u64)> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no `Max open files` line in /proc/PID/limits")?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let num = |v: Option<&str>| -> Result<u64> {
        match v.unwrap_or_default() {
            "unlimited" => Ok(u64::MAX),
            v => v
                .parse()
                .with_context(|| format!("open-files limit `{v}` is not a number")),
        }
    };
    Ok((num(it.next())?, num(it.next())?))
}

/// The soft limit on open files from `/proc/PID/limits`.
pub fn max_open_files(limits: &str) -> Result<u64> {
    open_files_limits(limits).map(|(soft, _)| soft)
}

/// A systemd limit property value (`65536`, `infinity`).
pub fn systemd_limit(v: &str) -> Result<u64> {
    match v.trim() {
        "infinity" => Ok(u64::MAX),
        v => v
            .parse()
            .with_context(|| format!("systemd limit `{v}` is not a number")),
    }
}

/// `mariadb -e 'SHOW SLAVE STATUS\G'` → key → value (empty when no replica
/// is configured).
pub fn slave_status(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim();
            (!k.starts_with('*')).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

pub fn field<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// One `<resource>` of `crm_mon --output-as=xml`.
#[derive(Debug, PartialEq, Eq)]
pub struct CrmResource {
    pub id: String,
    pub agent: String,
    pub role: String,
    pub active: bool,
    pub nodes: Vec<String>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let pat = format!(" {name}=\"");
    let start = tag.find(&pat)? + pat.len();
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_string())
}

/// Every `<resource …>` element in crm_mon's XML, with the nodes it runs on.
pub fn crm_resources(xml: &str) -> Vec<CrmResource> {
    let mut res = Vec::new();
    let mut rest = xml;
    while let Some(pos) = rest.find("<resource ") {
        rest = &rest[pos..];
        let Some(tag_end) = rest.find('>') else { break };
        let tag = &rest[..tag_end];
        let self_closing = tag.ends_with('/');
        let body_end = if self_closing {
            tag_end
        } else {
            rest.find("</resource>").unwrap_or(tag_end)
        };
        let body = &rest[tag_end..body_end];
        let nodes = body
            .split("<node ")
            .skip(1)
            .filter_map(|n| attr(&format!(" {n}"), "name"))
            .collect();
        res.push(CrmResource {
            id: attr(tag, "id").unwrap_or_default(),
            agent: attr(tag, "resource_agent").unwrap_or_default(),
            role: attr(tag, "role").unwrap_or_default(),
            active: attr(tag, "active").as_deref() == Some("true"),
            nodes,
        });
        rest = &rest[tag_end..];
    }
    res
}

/// Nodes on which a MariaDB/MySQL resource runs promoted (pacemaker 2.1
/// says `Promoted`, 2.0 `Master`).
pub fn promoted_db_nodes(xml: &str) -> Vec<String> {
    crm_resources(xml)
        .into_iter()
        .filter(|r| r.agent.contains("mariadb") || r.agent.contains("mysql"))
        .filter(|r| r.role == "Promoted" || r.role == "Master")
        .flat_map(|r| r.nodes)
        .collect()
}

/// `ss -Hltn` → local addresses (`ip:port`).
pub fn ss_listen(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

/// Median of a non-empty list (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addr_lists_inet_addresses() {
        let out = "2: eth0    inet 198.18.0.11/24 scope global eth0\\       valid_lft forever preferred_lft forever\n\
                   2: eth0    inet 198.18.0.10/24 brd 198.18.0.255 scope global secondary eth0\\       valid_lft forever\n";
        assert_eq!(ip_addr_show(out), ["198.18.0.11/24", "198.18.0.10/24"]);
        assert!(ip_addr_show("").is_empty());
    }

    #[test]
    fn corosync_quorum_reads_votequorum_summary() -> Result<()> {
        let out = "Quorum information\n------------------\nDate:             Fri Nov 27 23:00:00 2026\n\
Quorum provider:  corosync_votequorum\nNodes:            2\nNode ID:          1\nRing ID:          1.9\n\
Quorate:          Yes\n\nVotequorum information\n----------------------\nExpected votes:   2\n\
Highest expected: 2\nTotal votes:      2\nQuorum:           1  \nFlags:            2Node Quorate WaitForAll \n";
        assert_eq!(
            corosync_quorum(out)?,
            Quorum {
                quorate: true,
                nodes: 2,
                total_votes: 2,
                expected_votes: 2,
                qdevice_vote: false,
            }
        );
        let lone = out
            .replace("Quorate:          Yes", "Quorate:          No")
            .replace("Nodes:            2", "Nodes:            1");
        let q = corosync_quorum(&lone)?;
        assert!(!q.quorate);
        assert_eq!(q.nodes, 1);
        assert!(corosync_quorum("garbage").is_err());
        Ok(())
    }

    /// Two controllers and the arbiter's vote (the shape of
    /// firstboot's live qdevice test, with both nodes).
    const WITH_QDEVICE: &str = "Quorum information\n------------------\nQuorum provider:  corosync_votequorum\nNodes:            2\nNode ID:          1\nRing ID:          1.d\nQuorate:          Yes\n\nVotequorum information\n----------------------\nExpected votes:   3\nHighest expected: 3\nTotal votes:      3\nQuorum:           2  \nFlags:            Quorate Qdevice \n\nMembership information\n----------------------\n    Nodeid      Votes    Qdevice Name\n         1          1    A,V,NMW controller01 (local)\n         2          1    A,V,NMW controller02\n         0          1            Qdevice\n";

    #[test]
    fn corosync_quorum_sees_the_qdevice_vote() -> Result<()> {
        let q = corosync_quorum(WITH_QDEVICE)?;
        assert_eq!(
            q,
            Quorum {
                quorate: true,
                nodes: 2,
                total_votes: 3,
                expected_votes: 3,
                qdevice_vote: true,
            }
        );
        // qnetd out of reach: the device is listed without a vote
        let lost = WITH_QDEVICE
            .replace("Total votes:      3", "Total votes:      2")
            .replace(
                "         0          1            Qdevice",
                "         0          0            Qdevice",
            );
        let q = corosync_quorum(&lost)?;
        assert!(!q.qdevice_vote && q.total_votes == 2, "{q:?}");
        // the flag alone is not a vote
        let no_line = WITH_QDEVICE.replace("         0          1            Qdevice\n", "");
        assert!(!corosync_quorum(&no_line)?.qdevice_vote);
        Ok(())
    }

    #[test]
    fn qnetd_lists_clusters_nodes_and_votes() {
        let out = "Cluster \"openstack-ctl\":\n    Algorithm:          Fifty-Fifty split\n    Tie-breaker:        Node with lowest node ID\n    Node ID 2:\n        Client address:         ::ffff:198.18.0.12:40866\n        Configured node list:   1, 2\n        Membership node list:   1, 2\n        Vote:                   ACK (ACK)\n    Node ID 1:\n        Client address:         ::ffff:198.18.0.11:53106\n        Configured node list:   1, 2\n        Membership node list:   1, 2\n        Vote:                   No change (ACK)\n";
        assert_eq!(
            qnetd_clusters(out),
            vec![QnetdCluster {
                name: "openstack-ctl".into(),
                nodes: vec![(2, "ACK (ACK)".into()), (1, "No change (ACK)".into())],
            }]
        );
        assert!(qnetd_clusters("").is_empty());
    }

    #[test]
    fn rabbit_running_nodes_from_json() -> Result<()> {
        let out = r#"{"alarms":[],"cluster_name":"rabbit@controller01","disk_nodes":["rabbit@controller01","rabbit@controller02"],"running_nodes":["rabbit@controller02","rabbit@controller01"],"versions":{}}"#;
        assert_eq!(
            rabbit_running_nodes(out)?,
            ["rabbit@controller02", "rabbit@controller01"]
        );
        assert!(rabbit_running_nodes("Error: unable to perform an operation").is_err());
        Ok(())
    }

    #[test]
    fn rabbit_vhost_states_from_json() -> Result<()> {
        // As printed by rabbitmqctl 3.10 (`-q`, captured here).
        let out = "[\n{\"name\":\"/\",\"cluster_state\":{\"rabbit@controller01\":\"running\",\"rabbit@controller02\":\"stopped\"}}\n]\n";
        assert_eq!(
            rabbit_vhost_states(out, "/")?,
            [
                ("rabbit@controller01".to_string(), "running".to_string()),
                ("rabbit@controller02".to_string(), "stopped".to_string())
            ]
        );
        assert!(rabbit_vhost_states(out, "other").is_err());
        assert!(rabbit_vhost_states("Error: unable to perform an operation", "/").is_err());
        Ok(())
    }

    #[test]
    fn open_files_from_proc_limits() -> Result<()> {
        let limits =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            65535                65535                files     \n";
        assert_eq!(max_open_files(limits)?, 65535);
        assert_eq!(
            max_open_files("Max open files            unlimited  unlimited  files\n")?,
            u64::MAX
        );
        assert!(max_open_files("Max cpu time unlimited").is_err());
        assert_eq!(
            open_files_limits(
                "Max open files            1024                 20000                files\n"
            )?,
            (1024, 20000)
        );
        assert_eq!(systemd_limit("65536\n")?, 65536);
        assert_eq!(systemd_limit("infinity")?, u64::MAX);
        assert!(systemd_limit("").is_err());
        Ok(())
    }

    #[test]
    fn slave_status_fields() {
        let out = "*************************** 1. row ***************************\n\
                Slave_IO_State: Waiting for master to send event\n\
                   Master_Host: 198.18.0.11\n\
              Slave_IO_Running: Yes\n\
             Slave_SQL_Running: Yes\n\
                    Using_Gtid: Slave_Pos\n";
        let kv = slave_status(out);
        assert_eq!(field(&kv, "Slave_IO_Running"), Some("Yes"));
        assert_eq!(field(&kv, "Master_Host"), Some("198.18.0.11"));
        assert_eq!(
            field(&kv, "Slave_IO_State"),
            Some("Waiting for master to send event")
        );
        assert!(slave_status("").is_empty());
    }

    #[test]
    fn promoted_node_from_crm_mon_xml() {
        let xml = r#"<pacemaker-result api-version="2.25" request="crm_mon -1 --output-as=xml">
  <resources>
    <resource id="vip" resource_agent="ocf:heartbeat:IPaddr2" role="Started" active="true" orphaned="false" blocked="false" failed="false" failure_ignored="false" nodes_running_on="1">
      <node name="controller01" id="1" cached="true"/>
    </resource>
    <clone id="mariadb-clone" multi_state="true" unique="false">
      <resource id="mariadb" resource_agent="ocf:heartbeat:mariadb" role="Promoted" active="true" nodes_running_on="1">
        <node name="controller01" id="1" cached="true"/>
      </resource>
      <resource id="mariadb" resource_agent="ocf:heartbeat:mariadb" role="Unpromoted" active="true" nodes_running_on="1">
        <node name="controller02" id="2" cached="true"/>
      </resource>
      <resource id="mariadb" resource_agent="ocf:heartbeat:mariadb" role="Stopped" active="false" nodes_running_on="0"/>
    </clone>
  </resources>
</pacemaker-result>"#;
        let all = crm_resources(xml);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].nodes, ["controller01"]);
        assert!(all[3].nodes.is_empty());
        assert!(!all[3].active);
        assert_eq!(promoted_db_nodes(xml), ["controller01"]);
        let old = xml
            .replace("ocf:heartbeat:mariadb", "ocf:heartbeat:mysql")
            .replace("\"Promoted\"", "\"Master\"");
        assert_eq!(promoted_db_nodes(&old), ["controller01"]);
    }

    #[test]
    fn ss_listen_addresses() {
        let out = "LISTEN 0      1024     198.18.0.11:11211      0.0.0.0:*\n\
                   LISTEN 0      128          0.0.0.0:22         0.0.0.0:*\n";
        assert_eq!(ss_listen(out), ["198.18.0.11:11211", "0.0.0.0:22"]);
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
