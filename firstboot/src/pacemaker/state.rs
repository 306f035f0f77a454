//! The cluster's state as `crm_mon -1 --output-as=xml` reports it: which
//! nodes are online, where the VIP runs, which MariaDB instance is primary.

use anyhow::{Context, Result};
use roxmltree::{Document, Node};

use super::render::ids;

/// One MariaDB clone instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Node it runs on; None when stopped.
    pub node: Option<String>,
    /// `Promoted`/`Unpromoted` (2.1) or `Master`/`Slave` (2.0), `Stopped`, …
    pub role: String,
    pub failed: bool,
}

impl Instance {
    pub fn is_promoted(&self) -> bool {
        matches!(self.role.as_str(), "Promoted" | "Master")
    }
    pub fn is_unpromoted(&self) -> bool {
        matches!(self.role.as_str(), "Unpromoted" | "Slave")
    }
}

/// A failed operation as crm_mon lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAction {
    pub op: String,
    pub node: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub dc: Option<String>,
    pub with_quorum: bool,
    pub stonith_enabled: Option<bool>,
    /// (name, online)
    pub nodes: Vec<(String, bool)>,
    /// Nodes the VIP is active on (should be exactly one).
    pub vip_nodes: Vec<String>,
    pub mariadb: Vec<Instance>,
    pub failed: Vec<FailedAction>,
}

fn elements<'a, 'i>(node: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(|c| c.is_element())
}

fn named<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    elements(node).filter(move |c| c.tag_name().name() == name)
}

fn running_on(resource: Node) -> Vec<String> {
    if resource.attribute("active") == Some("false") {
        return Vec::new();
    }
    named(resource, "node")
        .filter_map(|n| n.attribute("name").map(str::to_string))
        .collect()
}

impl ClusterState {
    pub fn parse(xml: &str) -> Result<ClusterState> {
        let doc = Document::parse(xml).context("parsing crm_mon --output-as=xml")?;
        let root = doc.root_element();
        let mut st = ClusterState::default();
        for summary in named(root, "summary") {
            for dc in named(summary, "current_dc") {
                if dc.attribute("present") == Some("true") {
                    st.dc = dc.attribute("name").map(str::to_string);
                }
                st.with_quorum = dc.attribute("with_quorum") == Some("true");
            }
            for opts in named(summary, "cluster_options") {
                st.stonith_enabled = opts.attribute("stonith-enabled").map(|v| v == "true");
            }
        }
        for nodes in named(root, "nodes") {
            for n in named(nodes, "node") {
                if let Some(name) = n.attribute("name") {
                    st.nodes
                        .push((name.to_string(), n.attribute("online") == Some("true")));
                }
            }
        }
        for resources in named(root, "resources") {
            for r in elements(resources) {
                let id = r.attribute("id").unwrap_or_default();
                match r.tag_name().name() {
                    "resource" if id == ids::VIP => st.vip_nodes.extend(running_on(r)),
                    "clone" if id == ids::MARIADB_CLONE => {
                        for inst in named(r, "resource") {
                            st.mariadb.push(Instance {
                                node: running_on(inst).into_iter().next(),
                                role: inst.attribute("role").unwrap_or("Unknown").to_string(),
                                failed: inst.attribute("failed") == Some("true"),
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        for failures in named(root, "failures") {
            for f in named(failures, "failure") {
                st.failed.push(FailedAction {
                    op: f.attribute("op_key").unwrap_or_default().to_string(),
                    node: f.attribute("node").unwrap_or_default().to_string(),
                    reason: f
                        .attribute("exitreason")
                        .or(f.attribute("exitstatus"))
                        .unwrap_or_default()
                        .to_string(),
                });
            }
        }
        Ok(st)
    }

    /// Node of the promoted MariaDB instance(s).
    pub fn primaries(&self) -> Vec<&str> {
        self.mariadb
            .iter()
            .filter(|i| i.is_promoted())
            .filter_map(|i| i.node.as_deref())
            .collect()
    }

    /// Nodes with a running, unpromoted instance.
    pub fn replicas(&self) -> Vec<&str> {
        self.mariadb
            .iter()
            .filter(|i| i.is_unpromoted())
            .filter_map(|i| i.node.as_deref())
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Shape of pacemaker 2.1.5's output (seen on this machine), trimmed.
    const PROMOTED: &str = r#"<pacemaker-result api-version="2.25" request="crm_mon -1 --output-as=xml">
  <summary>
    <current_dc present="true" version="2.1.5" name="controller01" id="1" with_quorum="true"/>
    <cluster_options stonith-enabled="false" no-quorum-policy="stop"/>
  </summary>
  <nodes>
    <node name="controller01" id="1" online="true"/>
    <node name="controller02" id="2" online="false"/>
  </nodes>
  <resources>
    <resource id="vip" resource_agent="ocf:heartbeat:IPaddr2" role="Started" active="true" nodes_running_on="1">
      <node name="controller01" id="1" cached="true"/>
    </resource>
    <clone id="mariadb-clone" multi_state="true">
      <resource id="mariadb" role="Promoted" active="true" failed="false" nodes_running_on="1"><node name="controller01" id="1"/></resource>
      <resource id="mariadb" role="Stopped" active="false" nodes_running_on="0"/>
    </clone>
  </resources>
  <failures>
    <failure op_key="mariadb_start_0" node="controller02" exitstatus="error" exitreason="MySQL server failed to start"/>
  </failures>
</pacemaker-result>"#;

    #[test]
    fn parses_primary_vip_and_failures() {
        let st = ClusterState::parse(PROMOTED).unwrap();
        assert_eq!(st.dc.as_deref(), Some("controller01"));
        assert!(st.with_quorum);
        assert_eq!(st.stonith_enabled, Some(false));
        assert_eq!(
            st.nodes,
            [
                ("controller01".into(), true),
                ("controller02".into(), false)
            ]
        );
        assert_eq!(st.vip_nodes, ["controller01"]);
        assert_eq!(st.primaries(), ["controller01"]);
        assert!(st.replicas().is_empty());
        assert_eq!(st.failed.len(), 1);
        assert_eq!(st.failed[0].reason, "MySQL server failed to start");
    }

    #[test]
    fn old_role_names_count_too() {
        let st = ClusterState::parse(&PROMOTED.replace("Promoted", "Master")).unwrap();
        assert_eq!(st.primaries(), ["controller01"]);
    }
}
