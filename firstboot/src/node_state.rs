//! What first boot leaves on a node for the runs after it: the role data it
//! applied, which node this is and which files it wrote, and (last) the
//! instance-id. `apply` writes these files; `apply`, `cluster`, `status`,
//! `host-keys` and `datadir` read them, all through this module.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::datasource;
use crate::fsutil::{Owner, Root};
use crate::render::RenderedFile;
use crate::role::{ClusterSpec, Pair, Role};

/// Where the applied instance-id is recorded (only after success).
pub const INSTANCE_ID_PATH: &str = "/var/lib/nib/instance-id";
/// A copy of the role data for `nib-firstboot cluster` and `status` (0600 root).
pub const ROLE_DATA_PATH: &str = "/var/lib/nib/cluster.toml";
/// What first boot applied: node name and files (no secrets).
pub const APPLIED_PATH: &str = "/var/lib/nib/firstboot.json";

/// What first boot recorded under a root. Each part is `None` when missing
/// or unreadable: a half-configured node still gets a status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRecord {
    pub instance_id: Option<String>,
    /// When the instance-id was recorded (written last, after success).
    pub applied_at: Option<SystemTime>,
    /// This node's name in the role data.
    pub node: Option<String>,
}

impl NodeRecord {
    pub fn read(root: &Path) -> NodeRecord {
        let applied_at = fs::metadata(under(root, INSTANCE_ID_PATH))
            .and_then(|m| m.modified())
            .ok();
        let node = fs::read_to_string(under(root, APPLIED_PATH))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("node").and_then(|n| n.as_str()).map(str::to_string));
        NodeRecord {
            instance_id: recorded_instance_id(root),
            applied_at,
            node,
        }
    }
}

/// The recorded instance-id, if first boot completed under `root`.
pub fn recorded_instance_id(root: &Path) -> Option<String> {
    fs::read_to_string(under(root, INSTANCE_ID_PATH))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The role data first boot recorded under `root`, parsed into the pair.
/// Invalid role data is a `RoleDataError` (exit 2).
pub fn recorded_pair(root: &Path) -> Result<Pair> {
    let text = fs::read_to_string(under(root, ROLE_DATA_PATH)).with_context(|| {
        format!(
            "reading {ROLE_DATA_PATH}: first boot has not run on this node \
             (nib-firstboot apply), or pass --seed DIR"
        )
    })?;
    pair_from_toml(&text, ROLE_DATA_PATH)
}

fn pair_from_toml(text: &str, shown: &str) -> Result<Pair> {
    Ok(ClusterSpec::from_toml(text, shown)?.validate()?)
}

/// The pair from a role data file (cluster.toml) when given, else the one
/// first boot recorded; this node's name as [`load_pair`] finds it.
pub fn load_pair_from(role_data: Option<&Path>) -> Result<(Pair, String)> {
    let Some(path) = role_data else {
        return load_pair(None);
    };
    let shown = path.display().to_string();
    let text = fs::read_to_string(path).with_context(|| format!("reading {shown}"))?;
    Ok((pair_from_toml(&text, &shown)?, this_node()?))
}

fn this_node() -> Result<String> {
    NodeRecord::read(Path::new("/"))
        .node
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .context("cannot tell which node this is (no firstboot.json, no hostname)")
}

/// Appends the record of an apply to the node's rendered `files`: the role
/// data as given (`spec`), then the list of every file, itself excluded.
/// The instance-id is not among them: [`record_instance_id`] writes it last.
pub fn record_files(
    files: &mut Vec<RenderedFile>,
    spec: &ClusterSpec,
    instance_id: &str,
    node: &str,
) -> Result<()> {
    let mut role = spec.to_toml().into_bytes();
    role.splice(
        0..0,
        b"# The role data nib-firstboot applied (holds the secrets; root only).\n"
            .iter()
            .copied(),
    );
    files.push(RenderedFile {
        path: ROLE_DATA_PATH.into(),
        content: role,
        mode: 0o600,
        owner: Owner::root(),
        secret: true,
    });
    let applied = serde_json::json!({
        "instance_id": instance_id,
        "node": node,
        "files": files.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
    });
    let mut applied = serde_json::to_string_pretty(&applied)?;
    applied.push('\n');
    files.push(RenderedFile {
        path: APPLIED_PATH.into(),
        content: applied.into_bytes(),
        mode: 0o644,
        owner: Owner::root(),
        secret: false,
    });
    Ok(())
}

/// The last write of an apply: from here on `instance_id` counts as applied.
pub fn record_instance_id(root: &Root, instance_id: &str) -> Result<()> {
    root.write_atomic(
        Path::new(INSTANCE_ID_PATH),
        format!("{instance_id}\n").as_bytes(),
        0o644,
        &Owner::root(),
    )?;
    Ok(())
}

/// `path` (absolute on the node) under `root`.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The pair and this node's name: from `seed` when given (validated like
/// `apply` does), else from the copy first boot recorded (node from its
/// record, else the hostname). Invalid role data is a `RoleDataError`
/// (exit 2).
pub fn load_pair(seed: Option<&Path>) -> Result<(Pair, String)> {
    if let Some(dir) = seed {
        return match datasource::parse_seed(&datasource::load_dir(dir)?)?.1 {
            Role::Node(role) => Ok((role.pair, role.node.name)),
            Role::Arbiter(a) => Err(not_on_the_arbiter(&a.name)),
        };
    }
    let node = this_node()?;
    if recorded_arbiter(Path::new("/")).as_deref() == Some(node.as_str()) {
        return Err(not_on_the_arbiter(&node));
    }
    let pair = recorded_pair(Path::new("/"))?;
    Ok((pair, node))
}

/// The arbiter's name in the role data first boot recorded, if any.
fn recorded_arbiter(root: &Path) -> Option<String> {
    let text = fs::read_to_string(under(root, ROLE_DATA_PATH)).ok()?;
    ClusterSpec::from_toml(&text, ROLE_DATA_PATH)
        .ok()?
        .arbiter
        .map(|a| a.name)
}

fn not_on_the_arbiter(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{name} is the pair's quorum arbiter: it runs only corosync-qnetd (`corosync-qnetd-tool -l` lists the pair); the cluster commands run on the controllers"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_root_has_an_empty_record() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NodeRecord::read(dir.path()), NodeRecord::default());
        assert_eq!(recorded_instance_id(dir.path()), None);
    }

    #[test]
    fn the_record_reads_back_what_apply_writes() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../../tests/fixtures/cluster.toml");
        let spec = ClusterSpec::from_toml(text, "cluster.toml").unwrap();
        let mut files = Vec::new();
        record_files(&mut files, &spec, "iid-1", "controller02").unwrap();
        for f in &files {
            let p = under(dir.path(), &f.path.display().to_string());
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, &f.content).unwrap();
        }
        fs::write(under(dir.path(), INSTANCE_ID_PATH), "iid-1\n").unwrap();
        let record = NodeRecord::read(dir.path());
        assert_eq!(record.instance_id.as_deref(), Some("iid-1"));
        assert_eq!(record.node.as_deref(), Some("controller02"));
        assert!(record.applied_at.is_some());
        assert_eq!(recorded_pair(dir.path()).unwrap(), spec.validate().unwrap());
    }
}
