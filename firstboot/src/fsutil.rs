//! Writing files on a node (or an unpacked image): paths relative to a
//! [`Root`], owners resolved from that root's own `/etc/passwd` and
//! `/etc/group` (so it works on an image for another system), no write
//! through a symlinked directory or out of the root. The write itself is
//! nib_host::write's (temp file, mode and owner before the content, fsync,
//! rename, directory fsync; identical content not rewritten).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A file's owner by name, resolved inside the target root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub user: String,
    pub group: String,
}

impl Owner {
    pub fn new(user: &str, group: &str) -> Owner {
        Owner {
            user: user.to_string(),
            group: group.to_string(),
        }
    }
    pub fn root() -> Owner {
        Owner::new("root", "root")
    }
}

/// One file for [`Root::write_many`].
#[derive(Debug, Clone, Copy)]
pub struct FileWrite<'a> {
    pub path: &'a Path,
    pub bytes: &'a [u8],
    pub mode: u32,
    pub owner: &'a Owner,
}

pub use nib_host::write::{failpoint, sync_dir, WriteOutcome};

/// The target root directory with its user and group tables.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    users: HashMap<String, u32>,
    groups: HashMap<String, u32>,
    /// Whether we may chown (only root can; tests as a user keep their own ids).
    can_chown: bool,
}

impl Root {
    /// Open a root and read its `/etc/passwd` and `/etc/group`.
    pub fn open(path: &Path) -> Result<Root> {
        let meta =
            fs::metadata(path).with_context(|| format!("opening root {}", path.display()))?;
        if !meta.is_dir() {
            bail!("root {} is not a directory", path.display());
        }
        let users = read_id_table(&path.join("etc/passwd"))?;
        let groups = read_id_table(&path.join("etc/group"))?;
        Ok(Root {
            path: path.to_path_buf(),
            users,
            groups,
            can_chown: nix::unistd::geteuid().is_root(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this process sets owners (only root can).
    pub fn can_chown(&self) -> bool {
        self.can_chown
    }

    /// `rel` (absolute like `/etc/hosts` or relative) inside the root.
    /// Refuses `..` and symlinked directories, so a write never leaves the root.
    pub fn resolve(&self, rel: &Path) -> Result<PathBuf> {
        let mut out = self.path.clone();
        let comps: Vec<_> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(n) => {
                    out.push(n);
                    if i + 1 < comps.len() {
                        if let Ok(m) = fs::symlink_metadata(&out) {
                            if m.file_type().is_symlink() {
                                bail!("{}: a directory on the path is a symlink; refusing to write through it", out.display());
                            }
                        }
                    }
                }
                _ => bail!("{}: path must stay inside the root", rel.display()),
            }
        }
        Ok(out)
    }

    pub fn uid(&self, user: &str) -> Result<u32> {
        self.users
            .get(user)
            .copied()
            .with_context(|| format!("user {user:?} not in {}/etc/passwd", self.path.display()))
    }

    pub fn gid(&self, group: &str) -> Result<u32> {
        self.groups
            .get(group)
            .copied()
            .with_context(|| format!("group {group:?} not in {}/etc/group", self.path.display()))
    }

    /// Numeric ids of `owner` in this root.
    pub fn ids(&self, owner: &Owner) -> Result<(u32, u32)> {
        Ok((self.uid(&owner.user)?, self.gid(&owner.group)?))
    }

    /// The numeric owner to set: none where this process may not chown
    /// (tests as a user keep their own ids).
    fn owner_ids(&self, owner: &Owner) -> Result<Option<(u32, u32)>> {
        let ids = self.ids(owner)?;
        Ok(self.can_chown.then_some(ids))
    }

    /// Would writing `bytes` with `mode`/`owner` to `rel` change anything?
    pub fn needs_write(
        &self,
        rel: &Path,
        bytes: &[u8],
        mode: u32,
        owner: &Owner,
    ) -> Result<Option<WriteOutcome>> {
        let path = self.resolve(rel)?;
        Ok(nib_host::write::needs_write(
            &path,
            bytes,
            mode,
            self.owner_ids(owner)?,
        )?)
    }

    /// Write `bytes` to `rel` atomically with `mode` and `owner`; parent
    /// directories are created (0755 root). Identical content is not rewritten.
    pub fn write_atomic(
        &self,
        rel: &Path,
        bytes: &[u8],
        mode: u32,
        owner: &Owner,
    ) -> Result<WriteOutcome> {
        let o = self.write_many(&[FileWrite {
            path: rel,
            bytes,
            mode,
            owner,
        }])?;
        Ok(o[0])
    }

    /// Write many files with the guarantees of [`Root::write_atomic`], their
    /// fsyncs side by side (nib_host::write::write_many). Returns each
    /// file's outcome in order.
    pub fn write_many(&self, files: &[FileWrite<'_>]) -> Result<Vec<WriteOutcome>> {
        let mut resolved = Vec::with_capacity(files.len());
        // missing directories made first (0755 root), their entries synced
        // together
        let mut to_sync = std::collections::BTreeSet::new();
        for w in files {
            let path = self.resolve(w.path)?;
            if let Some(parent) = path.parent() {
                self.create_dirs_deferred(parent, &mut to_sync)?;
            }
            resolved.push((path, self.owner_ids(w.owner)?));
        }
        for d in &to_sync {
            sync_dir(d)?;
        }
        let writes: Vec<nib_host::FileWrite<'_>> = files
            .iter()
            .zip(&resolved)
            .map(|(w, (path, owner))| nib_host::FileWrite {
                path,
                bytes: w.bytes,
                mode: w.mode,
                owner: *owner,
            })
            .collect();
        Ok(nib_host::write_many(&writes)?)
    }

    /// Create `dir` and missing parents (0755, root-owned), syncing each new entry.
    pub fn create_dirs(&self, dir: &Path) -> Result<()> {
        let mut created_in = std::collections::BTreeSet::new();
        self.create_dirs_deferred(dir, &mut created_in)?;
        for p in &created_in {
            sync_dir(p)?;
        }
        Ok(())
    }

    /// Create `dir` and missing parents (0755); the directories whose
    /// entries changed are added to `to_sync` for the caller to fsync.
    fn create_dirs_deferred(
        &self,
        dir: &Path,
        to_sync: &mut std::collections::BTreeSet<PathBuf>,
    ) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(p) = dir.parent() {
            self.create_dirs_deferred(p, to_sync)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => {
                return Err(e).with_context(|| format!("creating directory {}", dir.display()))
            }
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", dir.display()))?;
        if let Some(p) = dir.parent() {
            to_sync.insert(p.to_path_buf());
        }
        Ok(())
    }

    /// Ensure a directory exists with `mode` and `owner` (e.g. `/root/.ssh` 0700).
    pub fn ensure_dir(&self, rel: &Path, mode: u32, owner: &Owner) -> Result<WriteOutcome> {
        let path = self.resolve(rel)?;
        let (uid, gid) = self.ids(owner)?;
        let mut outcome = WriteOutcome::Unchanged;
        if !path.is_dir() {
            self.create_dirs(&path)?;
            outcome = WriteOutcome::Written;
        }
        let m = fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        if m.mode() & 0o7777 != mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", path.display()))?;
            outcome = outcome.max_with(WriteOutcome::Fixed);
        }
        if self.can_chown && (m.uid() != uid || m.gid() != gid) {
            nix::unistd::chown(&path, Some(uid.into()), Some(gid.into()))
                .with_context(|| format!("chown {}", path.display()))?;
            outcome = outcome.max_with(WriteOutcome::Fixed);
        }
        Ok(outcome)
    }
}

/// `name:x:id:…` lines → name → id (passwd and group share the first three fields).
fn read_id_table(path: &Path) -> Result<HashMap<String, u32>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut f = line.split(':');
        let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let Ok(id) = id.parse() {
            map.entry(name.to_string()).or_insert(id);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(d.path().join("etc")).expect("mkdir");
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nrabbitmq:x:106:111::/var/lib/rabbitmq:/usr/sbin/nologin\n",
        )
        .expect("w");
        fs::write(d.path().join("etc/group"), "root:x:0:\nrabbitmq:x:111:\n").expect("w");
        let r = Root::open(d.path()).expect("open");
        (d, r)
    }

    #[test]
    fn writes_then_skips_identical() {
        let (d, r) = root();
        let p = Path::new("/var/lib/rabbitmq/.erlang.cookie");
        assert_eq!(
            r.write_atomic(p, b"abc", 0o400, &Owner::new("rabbitmq", "rabbitmq"))
                .expect("w"),
            WriteOutcome::Written
        );
        let full = d.path().join("var/lib/rabbitmq/.erlang.cookie");
        assert_eq!(fs::read(&full).expect("r"), b"abc");
        assert_eq!(fs::metadata(&full).expect("m").mode() & 0o7777, 0o400);
        if r.can_chown {
            assert_eq!(fs::metadata(&full).expect("m").uid(), 106);
        }
        assert_eq!(
            r.write_atomic(p, b"abc", 0o400, &Owner::new("rabbitmq", "rabbitmq"))
                .expect("w"),
            WriteOutcome::Unchanged
        );
        assert_eq!(
            r.write_atomic(p, b"abc", 0o440, &Owner::new("rabbitmq", "rabbitmq"))
                .expect("w"),
            WriteOutcome::Fixed
        );
        assert_eq!(
            r.write_atomic(p, b"abcd", 0o440, &Owner::new("rabbitmq", "rabbitmq"))
                .expect("w"),
            WriteOutcome::Written
        );
        assert!(!d
            .path()
            .join("var/lib/rabbitmq/..erlang.cookie.nib-tmp")
            .exists());
    }

    #[test]
    fn write_many_matches_write_atomic() {
        let (d, r) = root();
        let own = Owner::root();
        let rab = Owner::new("rabbitmq", "rabbitmq");
        r.write_atomic(Path::new("/etc/a"), b"same", 0o644, &own)
            .expect("w");
        r.write_atomic(Path::new("/etc/b"), b"meta", 0o600, &own)
            .expect("w");
        fs::write(d.path().join("etc/.c.nib-tmp"), b"stale").expect("w");
        let batch = [
            FileWrite {
                path: Path::new("/etc/a"),
                bytes: b"same",
                mode: 0o644,
                owner: &own,
            },
            FileWrite {
                path: Path::new("/etc/b"),
                bytes: b"meta",
                mode: 0o644,
                owner: &own,
            },
            FileWrite {
                path: Path::new("/etc/c"),
                bytes: b"new",
                mode: 0o640,
                owner: &own,
            },
            FileWrite {
                path: Path::new("/var/lib/x/y"),
                bytes: b"deep",
                mode: 0o400,
                owner: &rab,
            },
        ];
        let out = r.write_many(&batch).expect("batch");
        use WriteOutcome::*;
        assert_eq!(out, vec![Unchanged, Fixed, Written, Written]);
        assert_eq!(fs::read(d.path().join("etc/c")).expect("r"), b"new");
        assert_eq!(
            fs::metadata(d.path().join("var/lib/x/y"))
                .expect("m")
                .mode()
                & 0o7777,
            0o400
        );
        assert!(!d.path().join("etc/.c.nib-tmp").exists());
        assert_eq!(r.write_many(&batch).expect("again"), vec![Unchanged; 4]);
    }

    #[test]
    fn stale_temp_is_removed_even_when_unchanged() {
        let (d, r) = root();
        let p = Path::new("etc/hostname");
        r.write_atomic(p, b"x\n", 0o644, &Owner::root()).expect("w");
        fs::write(d.path().join("etc/.hostname.nib-tmp"), b"partial").expect("w");
        assert_eq!(
            r.write_atomic(p, b"x\n", 0o644, &Owner::root()).expect("w"),
            WriteOutcome::Unchanged
        );
        assert!(!d.path().join("etc/.hostname.nib-tmp").exists());
    }

    #[test]
    fn unknown_owner_and_escape_fail() {
        let (_d, r) = root();
        let err = r
            .write_atomic(
                Path::new("/etc/x"),
                b"",
                0o644,
                &Owner::new("mysql", "mysql"),
            )
            .expect_err("no mysql");
        assert!(err.to_string().contains("mysql"), "{err}");
        assert!(r.resolve(Path::new("../etc/x")).is_err());
    }

    #[test]
    fn refuses_symlinked_dir() {
        let (d, r) = root();
        std::os::unix::fs::symlink("/tmp", d.path().join("etc/evil")).expect("symlink");
        assert!(r
            .write_atomic(Path::new("/etc/evil/x"), b"", 0o644, &Owner::root())
            .is_err());
    }
}
