//! Shared helpers for the integration tests: fixture paths, a fake target
//! root, seeds, running the real binary, and byte-for-byte tree snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nib_firstboot::role::ClusterSpec;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn example_toml() -> String {
    fs::read_to_string(fixtures().join("cluster.toml")).expect("example cluster.toml")
}

pub fn example() -> ClusterSpec {
    ClusterSpec::from_toml(&example_toml(), "cluster.toml").expect("example parses")
}

/// The example pair with a quorum arbiter, arbiter01.
pub fn arbiter_example() -> ClusterSpec {
    let text = fs::read_to_string(fixtures().join("cluster-arbiter.toml")).expect("read");
    ClusterSpec::from_toml(&text, "cluster-arbiter.toml").expect("parses")
}

/// `spec`'s seed for `node`, as `nib seed` makes it.
pub fn seed_of(spec: &ClusterSpec, node: &str, iid: Option<&str>) -> tempfile::TempDir {
    let s = nib_firstboot::seed::seed_files(spec, node, iid).expect("seed");
    seed_dir(&s.meta_data, &s.user_data, s.network_config.as_deref())
}

/// The example's MariaDB replication password, and a temp file holding it
/// (for scripts, which must not get it on their command line).
pub fn replication_password_file() -> (String, tempfile::NamedTempFile) {
    let pw = example()
        .secrets
        .mariadb_replication_password
        .expose()
        .to_string();
    let f = tempfile::NamedTempFile::new().expect("tmp");
    fs::write(f.path(), &pw).expect("write password file");
    (pw, f)
}

/// A target root like the image's: its passwd/group, an empty MariaDB datadir.
pub fn fake_root() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(d.path().join("etc")).expect("mkdir");
    for f in ["passwd", "group"] {
        fs::copy(
            fixtures().join("root/etc").join(f),
            d.path().join("etc").join(f),
        )
        .expect("copy");
    }
    fs::create_dir_all(d.path().join("var/lib/mysql")).expect("mkdir");
    d
}

/// Write a seed directory with the given files.
pub fn seed_dir(meta: &str, user: &str, net: Option<&str>) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    fs::write(d.path().join("meta-data"), meta).expect("w");
    fs::write(d.path().join("user-data"), user).expect("w");
    if let Some(n) = net {
        fs::write(d.path().join("network-config"), n).expect("w");
    }
    d
}

/// The example's seed for `node`, as `nib seed` makes it.
pub fn example_seed(node: &str, iid: Option<&str>) -> tempfile::TempDir {
    let s = nib_firstboot::seed::seed_files(&example(), node, iid).expect("seed");
    seed_dir(&s.meta_data, &s.user_data, s.network_config.as_deref())
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nib-firstboot")
}

pub fn apply(root: &Path, seed: &Path, extra: &[&str]) -> Output {
    Command::new(bin())
        .arg("apply")
        .arg("--root")
        .arg(root)
        .arg("--seed")
        .arg(seed)
        .args(extra)
        .output()
        .expect("run nib-firstboot")
}

pub fn text(o: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One entry of a tree snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        content: Vec<u8>,
    },
    Link {
        target: PathBuf,
    },
}

/// Every path under `root` with type, mode, owner and content.
/// `skip` drops paths (relative) for which it returns true.
pub fn snapshot(root: &Path, skip: &dyn Fn(&str) -> bool) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, skip: &dyn Fn(&str) -> bool, out: &mut BTreeMap<String, Entry>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p
            .strip_prefix(root)
            .expect("prefix")
            .to_string_lossy()
            .into_owned();
        if skip(&rel) {
            continue;
        }
        let m = fs::symlink_metadata(&p).expect("stat");
        let (mode, uid, gid) = (m.mode() & 0o7777, m.uid(), m.gid());
        if m.file_type().is_symlink() {
            out.insert(
                rel,
                Entry::Link {
                    target: fs::read_link(&p).expect("readlink"),
                },
            );
        } else if m.is_dir() {
            out.insert(rel, Entry::Dir { mode, uid, gid });
            walk(root, &p, skip, out);
        } else {
            out.insert(
                rel,
                Entry::File {
                    mode,
                    uid,
                    gid,
                    content: fs::read(&p).expect("read"),
                },
            );
        }
    }
}

/// Paths, size and mtime/inode: proves a file was not rewritten.
pub fn stamps(root: &Path) -> BTreeMap<String, (u64, i64, i64, u64)> {
    let mut out = BTreeMap::new();
    for (rel, _) in snapshot(root, &|_| false) {
        let m = fs::symlink_metadata(root.join(&rel)).expect("stat");
        out.insert(rel, (m.ino(), m.mtime(), m.mtime_nsec(), m.size()));
    }
    out
}

/// Describe the first difference between two snapshots, showing both sides.
pub fn diff(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) -> Option<String> {
    for (k, va) in a {
        match b.get(k) {
            None => return Some(format!("{k}: only in the first tree")),
            Some(vb) if vb != va => {
                let show = |e: &Entry| match e {
                    Entry::File {
                        mode,
                        uid,
                        gid,
                        content,
                    } => format!(
                        "file {mode:o} {uid}:{gid} {} bytes: {:?}",
                        content.len(),
                        String::from_utf8_lossy(&content[..content.len().min(400)])
                    ),
                    other => format!("{other:?}"),
                };
                return Some(format!(
                    "{k} differs:\n  first:  {}\n  second: {}",
                    show(va),
                    show(vb)
                ));
            }
            _ => {}
        }
    }
    b.keys()
        .find(|k| !a.contains_key(*k))
        .map(|k| format!("{k}: only in the second tree"))
}

/// The host's own systemd units (sysinit.target, …) copied into `root`:
/// what the default dependencies of the units under test pull in when
/// `systemd-analyze verify --root` checks them.
pub fn copy_system_units(root: &Path) {
    fs::create_dir_all(root.join("usr/lib/systemd")).expect("mkdir");
    let cp = Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(root.join("usr/lib/systemd/"))
        .status()
        .expect("cp");
    assert!(cp.success());
}
