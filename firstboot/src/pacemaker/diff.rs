//! Comparing the rendered configuration with the live CIB, and the smallest
//! set of `cibadmin` operations that makes the live one match.
//!
//! nib owns three kinds of things in the CIB:
//! - name/value pairs in attribute sets (cluster properties, resource
//!   defaults): compared by name inside their set, so the
//!   pairs pacemaker adds itself (dc-version, cluster-name, …) are left alone;
//! - whole resources and constraints: compared as XML trees (attribute order
//!   and whitespace do not matter), replaced when they differ;
//! - the tag `nib-managed`, which lists every resource and constraint nib
//!   created, so that one the role data no longer asks for (a fence device
//!   after fencing was switched off) is removed, and nothing else ever is.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};
use roxmltree::{Document, Node};

use super::render::ids::MANAGED_TAG;

/// One `cibadmin` operation. `xml` may contain secrets: it goes to cibadmin's
/// stdin, never to a log, an error or the command line.
#[derive(Clone, PartialEq, Eq)]
pub enum CibOp {
    /// `cibadmin --modify --xml-pipe`: merges a `<configuration>` fragment
    /// (new objects and changed pairs) in one transaction.
    Modify { xml: String },
    /// `cibadmin --replace --scope SECTION --xml-pipe`: one whole object.
    Replace {
        section: &'static str,
        what: String,
        xml: String,
    },
    /// `cibadmin --delete --xml-pipe`: one object no longer wanted.
    Delete {
        section: &'static str,
        what: String,
        xml: String,
    },
}

impl std::fmt::Debug for CibOp {
    // Names what is changed, never the XML (it may carry passwords).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CibOp::Modify { .. } => write!(f, "modify configuration"),
            CibOp::Replace { what, .. } => write!(f, "replace {what}"),
            CibOp::Delete { what, .. } => write!(f, "delete {what}"),
        }
    }
}

/// What differs and the operations that fix it, in the order they must run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One line per difference, for the journal (no values: some are secret).
    pub changes: Vec<String>,
    pub ops: Vec<CibOp>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Attribute sets whose pairs nib sets one by one: (section, set element).
const PAIR_SECTIONS: &[&str] = &["crm_config", "rsc_defaults", "op_defaults"];
/// Sections whose direct children nib owns whole.
const OBJECT_SECTIONS: &[&str] = &["resources", "constraints", "tags", "alerts"];

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn elements<'a, 'i>(node: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(|c| c.is_element())
}

fn configuration<'a, 'i>(doc: &'a Document<'i>, what: &str) -> Result<Node<'a, 'i>> {
    let root = doc.root_element();
    if root.tag_name().name() == "configuration" {
        return Ok(root);
    }
    child(root, "configuration").ok_or_else(|| anyhow!("{what}: no <configuration> element"))
}

/// Equality of two elements as pacemaker sees them: same name, same
/// attributes (any order), same element children in the same order.
pub fn same_tree(a: Node, b: Node) -> bool {
    if a.tag_name().name() != b.tag_name().name() {
        return false;
    }
    let attrs = |n: Node| -> BTreeMap<String, String> {
        n.attributes()
            .map(|a| (a.name().to_string(), a.value().to_string()))
            .collect()
    };
    if attrs(a) != attrs(b) {
        return false;
    }
    let (ca, cb): (Vec<_>, Vec<_>) = (elements(a).collect(), elements(b).collect());
    ca.len() == cb.len() && ca.iter().zip(&cb).all(|(x, y)| same_tree(*x, *y))
}

/// Serialises an element (attributes escaped) without the whitespace of the
/// source: the text sent to cibadmin.
pub fn to_xml(node: Node) -> String {
    let mut out = String::new();
    write_xml(node, &mut out);
    out
}

fn write_xml(node: Node, out: &mut String) {
    let name = node.tag_name().name();
    out.push('<');
    out.push_str(name);
    for a in node.attributes() {
        let _ = write!(out, " {}=\"{}\"", a.name(), escape_attr(a.value()));
    }
    let kids: Vec<_> = elements(node).collect();
    if kids.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for k in kids {
        write_xml(k, out);
    }
    let _ = write!(out, "</{name}>");
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
}

/// `<name id="…">` for messages; never attribute values.
fn describe(node: Node) -> String {
    format!(
        "{} {}",
        node.tag_name().name(),
        node.attribute("id").unwrap_or("(no id)")
    )
}

/// The attribute sets of a section (`cluster_property_set`, `meta_attributes`).
fn pair_sets<'a, 'i>(section: Node<'a, 'i>) -> Vec<Node<'a, 'i>> {
    elements(section).collect()
}

/// Compares a rendered CIB (`<cib>` or `<configuration>`) with the output of
/// `cibadmin --query` and returns the operations that make the live CIB
/// carry nib's configuration. An empty plan means nothing to do.
pub fn plan(desired_xml: &str, current_xml: &str) -> Result<Plan> {
    let desired_doc = Document::parse(desired_xml).context("parsing the rendered CIB")?;
    let current_doc =
        Document::parse(current_xml).context("parsing the output of cibadmin --query")?;
    let desired = configuration(&desired_doc, "rendered CIB")?;
    let current = configuration(&current_doc, "cibadmin --query")?;

    let mut plan = Plan::default();
    // The merge fragment: section name -> serialised children.
    let mut fragment: BTreeMap<&str, Vec<String>> = BTreeMap::new();

    // 1. Pairs, compared by name within their set.
    for &section_name in PAIR_SECTIONS {
        let Some(want_section) = child(desired, section_name) else {
            continue;
        };
        let have_section = child(current, section_name);
        for want_set in pair_sets(want_section) {
            let have_set = have_section.and_then(|s| {
                pair_sets(s).into_iter().find(|h| {
                    h.tag_name().name() == want_set.tag_name().name()
                        && h.attribute("id") == want_set.attribute("id")
                })
            });
            if let Some(xml) = pair_update(want_set, have_set, &mut plan.changes) {
                fragment.entry(section_name).or_default().push(xml);
            }
        }
    }

    // 2. Whole objects, by element name and id.
    let mut replaces = Vec::new();
    for &section_name in OBJECT_SECTIONS {
        let Some(want_section) = child(desired, section_name) else {
            continue;
        };
        let have_section = child(current, section_name);
        for want in elements(want_section) {
            let have = have_section.and_then(|s| {
                elements(s).find(|h| {
                    h.tag_name().name() == want.tag_name().name()
                        && h.attribute("id") == want.attribute("id")
                })
            });
            match have {
                None => {
                    plan.changes.push(format!("create {}", describe(want)));
                    fragment.entry(section_name).or_default().push(to_xml(want));
                }
                Some(have) if !same_tree(want, have) => {
                    plan.changes.push(format!("update {}", describe(want)));
                    replaces.push(CibOp::Replace {
                        section: section_name,
                        what: describe(want),
                        xml: to_xml(want),
                    });
                }
                Some(_) => {}
            }
        }
    }

    // 3. Objects nib created earlier that the role data no longer wants.
    let wanted: BTreeSet<&str> = OBJECT_SECTIONS
        .iter()
        .filter_map(|s| child(desired, s))
        .flat_map(elements)
        .filter_map(|n| n.attribute("id"))
        .collect();
    let previously: Vec<&str> = child(current, "tags")
        .and_then(|t| elements(t).find(|n| n.attribute("id") == Some(MANAGED_TAG)))
        .map(|tag| elements(tag).filter_map(|r| r.attribute("id")).collect())
        .unwrap_or_default();
    let mut deletes = Vec::new();
    // Constraints first: a resource still referenced cannot be deleted.
    for section_name in ["constraints", "resources"] {
        let Some(have_section) = child(current, section_name) else {
            continue;
        };
        for id in &previously {
            if wanted.contains(id) {
                continue;
            }
            if let Some(stale) = elements(have_section).find(|n| n.attribute("id") == Some(id)) {
                plan.changes.push(format!("remove {}", describe(stale)));
                deletes.push(CibOp::Delete {
                    section: section_name,
                    what: describe(stale),
                    xml: format!("<{} id=\"{}\"/>", stale.tag_name().name(), escape_attr(id)),
                });
            }
        }
    }

    if !fragment.is_empty() {
        let mut xml = String::from("<configuration>");
        for (section, kids) in &fragment {
            let _ = write!(xml, "<{section}>{}</{section}>", kids.concat());
        }
        xml.push_str("</configuration>");
        plan.ops.push(CibOp::Modify { xml });
    }
    // Replace resources before constraints before the tag: a changed
    // constraint may name a changed resource; the tag must stop naming a
    // stale object before that object is deleted.
    replaces.sort_by_key(|op| match op {
        CibOp::Replace { section, .. } => OBJECT_SECTIONS.iter().position(|s| s == section),
        _ => None,
    });
    plan.ops.extend(replaces);
    plan.ops.extend(deletes);
    Ok(plan)
}

/// The merge XML for one attribute set, or None when every wanted pair is
/// already there with the wanted value. A pair present under another id is
/// updated under that id, so no name appears twice in a set.
fn pair_update(
    want_set: Node,
    have_set: Option<Node>,
    changes: &mut Vec<String>,
) -> Option<String> {
    let set_name = want_set.tag_name().name();
    let set_id = want_set.attribute("id").unwrap_or_default();
    let mut pairs = String::new();
    for want in elements(want_set).filter(|n| n.tag_name().name() == "nvpair") {
        let name = want.attribute("name").unwrap_or_default();
        let value = want.attribute("value").unwrap_or_default();
        let have = have_set.and_then(|s| {
            elements(s)
                .find(|n| n.tag_name().name() == "nvpair" && n.attribute("name") == Some(name))
        });
        let id = match have {
            Some(h) if h.attribute("value") == Some(value) => continue,
            Some(h) => {
                changes.push(format!("set {name} in {set_name} {set_id}"));
                h.attribute("id").unwrap_or_default()
            }
            None => {
                changes.push(format!("add {name} to {set_name} {set_id}"));
                want.attribute("id").unwrap_or_default()
            }
        };
        let _ = write!(
            pairs,
            "<nvpair id=\"{}\" name=\"{}\" value=\"{}\"/>",
            escape_attr(id),
            escape_attr(name),
            escape_attr(value)
        );
    }
    if pairs.is_empty() {
        return None;
    }
    Some(format!(
        "<{set_name} id=\"{}\">{pairs}</{set_name}>",
        escape_attr(set_id)
    ))
}

/// The parts of `cibadmin --query` output that say whether the
/// configuration changed: (admin_epoch, epoch) and a digest of the
/// configuration section's canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDigest {
    pub admin_epoch: u64,
    pub epoch: u64,
    pub sha256: String,
}

pub fn config_digest(cib_xml: &str) -> Result<ConfigDigest> {
    use sha2::{Digest, Sha256};
    let doc = Document::parse(cib_xml).context("parsing the output of cibadmin --query")?;
    let root = doc.root_element();
    if root.tag_name().name() != "cib" {
        bail!(
            "cibadmin --query: root element is <{}>, not <cib>",
            root.tag_name().name()
        );
    }
    let num = |name: &str| -> Result<u64> {
        root.attribute(name)
            .unwrap_or("0")
            .parse()
            .with_context(|| format!("cibadmin --query: attribute {name} is not a number"))
    };
    let config = configuration(&doc, "cibadmin --query")?;
    Ok(ConfigDigest {
        admin_epoch: num("admin_epoch")?,
        epoch: num("epoch")?,
        sha256: hex::encode(Sha256::digest(to_xml(config).as_bytes())),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CURRENT_EMPTY: &str = r#"<cib epoch="5" admin_epoch="0" num_updates="3"><configuration>
        <crm_config><cluster_property_set id="cib-bootstrap-options">
          <nvpair id="cib-bootstrap-options-have-watchdog" name="have-watchdog" value="false"/>
          <nvpair id="cib-bootstrap-options-dc-version" name="dc-version" value="2.1.5"/>
        </cluster_property_set></crm_config>
        <nodes><node id="1" uname="n1"/></nodes>
        <resources/><constraints/>
      </configuration><status/></cib>"#;

    const DESIRED: &str = r#"<cib><configuration>
        <crm_config><cluster_property_set id="cib-bootstrap-options">
          <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>
        </cluster_property_set></crm_config>
        <resources><primitive id="vip" class="ocf" provider="heartbeat" type="IPaddr2">
          <instance_attributes id="vip-ia"><nvpair id="vip-ia-ip" name="ip" value="10.0.0.1"/></instance_attributes>
        </primitive></resources>
        <constraints/>
        <tags><tag id="nib-managed"><obj_ref id="vip"/></tag></tags>
      </configuration></cib>"#;

    #[test]
    fn fresh_cib_gets_one_merge() {
        let p = plan(DESIRED, CURRENT_EMPTY).unwrap();
        assert_eq!(p.ops.len(), 1, "{p:?}");
        let CibOp::Modify { xml } = &p.ops[0] else {
            panic!("{p:?}")
        };
        // Pacemaker's own pairs are not in the merge; nib's are.
        assert!(!xml.contains("dc-version"));
        assert!(xml.contains(r#"name="stonith-enabled" value="false""#));
        assert!(xml.contains(r#"<primitive id="vip""#));
        Document::parse(xml).unwrap();
    }

    #[test]
    fn applied_cib_needs_nothing_even_reformatted() {
        // The desired config merged into the current one, attributes in
        // another order and other whitespace: nothing to do.
        let current = r#"<cib epoch="9"><configuration><crm_config><cluster_property_set id="cib-bootstrap-options"><nvpair id="x" value="2.1.5" name="dc-version"/><nvpair value="false" name="stonith-enabled" id="cib-bootstrap-options-stonith-enabled"/></cluster_property_set></crm_config>
          <nodes><node uname="n1" id="1"/></nodes>
          <resources><primitive type="IPaddr2" id="vip" class="ocf" provider="heartbeat"><instance_attributes id="vip-ia"><nvpair id="vip-ia-ip" name="ip" value="10.0.0.1"/></instance_attributes></primitive></resources>
          <constraints/><tags><tag id="nib-managed"><obj_ref id="vip"/></tag></tags></configuration></cib>"#;
        let p = plan(DESIRED, current).unwrap();
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn changed_pair_keeps_its_existing_id() {
        let current = CURRENT_EMPTY.replace(
            "<nvpair id=\"cib-bootstrap-options-have-watchdog\"",
            "<nvpair id=\"set-by-hand\" name=\"stonith-enabled\" value=\"true\"/><nvpair id=\"cib-bootstrap-options-have-watchdog\"",
        );
        let p = plan(DESIRED, &current).unwrap();
        let CibOp::Modify { xml } = &p.ops[0] else {
            panic!("{p:?}")
        };
        assert!(
            xml.contains(r#"<nvpair id="set-by-hand" name="stonith-enabled" value="false"/>"#),
            "{xml}"
        );
        assert!(p.changes.contains(
            &"set stonith-enabled in cluster_property_set cib-bootstrap-options".to_string()
        ));
    }

    #[test]
    fn changed_object_is_replaced_and_stale_one_deleted_after() {
        let current = r#"<cib><configuration><crm_config/><nodes/>
          <resources>
            <primitive id="vip" class="ocf" provider="heartbeat" type="IPaddr2"><instance_attributes id="vip-ia"><nvpair id="vip-ia-ip" name="ip" value="10.0.0.2"/></instance_attributes></primitive>
            <primitive id="fence-n2" class="stonith" type="fence_ipmilan"/>
            <primitive id="hand-made" class="ocf" provider="heartbeat" type="Dummy"/>
          </resources>
          <constraints><rsc_location id="loc-fence" rsc="fence-n2" node="n2" score="-INFINITY"/></constraints>
          <tags><tag id="nib-managed"><obj_ref id="vip"/><obj_ref id="fence-n2"/><obj_ref id="loc-fence"/></tag></tags>
        </configuration></cib>"#;
        let p = plan(DESIRED, current).unwrap();
        let names: Vec<String> = p.ops.iter().map(|o| format!("{o:?}")).collect();
        assert_eq!(
            names,
            [
                "modify configuration",
                "replace primitive vip",
                "replace tag nib-managed",
                "delete rsc_location loc-fence",
                "delete primitive fence-n2",
            ],
            "{:?}",
            p.changes
        );
        // An object nib never created stays.
        assert!(!p.changes.iter().any(|c| c.contains("hand-made")));
    }

    #[test]
    fn digest_ignores_status_and_formatting() {
        let a = config_digest(r#"<cib epoch="3" admin_epoch="0"><configuration><resources/></configuration><status><x/></status></cib>"#).unwrap();
        let b = config_digest("<cib admin_epoch=\"0\" epoch=\"3\">\n <configuration>\n  <resources/>\n </configuration>\n <status/>\n</cib>").unwrap();
        assert_eq!(a, b);
        let c = config_digest(
            r#"<cib epoch="4" admin_epoch="0"><configuration><resources/></configuration></cib>"#,
        )
        .unwrap();
        assert_ne!(a, c);
    }
}
