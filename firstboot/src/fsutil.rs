//! Writing files on a node (or an unpacked image) safely: every write is a
//! temp file in the same directory, mode and owner set, fsync, rename, fsync
//! of the directory; identical content is not rewritten. Paths are relative
//! to a [`Root`], and owners are resolved from that root's own
//! `/etc/passwd` and `/etc/group` (so it works on an image for another system).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Content, mode and owner were already right.
    Unchanged,
    /// Content was right; mode and/or owner were fixed in place.
    Fixed,
    /// New content was written.
    Written,
}

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

    /// Would writing `bytes` with `mode`/`owner` to `rel` change anything?
    pub fn needs_write(
        &self,
        rel: &Path,
        bytes: &[u8],
        mode: u32,
        owner: &Owner,
    ) -> Result<Option<WriteOutcome>> {
        let path = self.resolve(rel)?;
        let (uid, gid) = self.ids(owner)?;
        Ok(
            match compare(&path, bytes, mode, uid, gid, self.can_chown)? {
                State::Same => None,
                State::MetaOnly => Some(WriteOutcome::Fixed),
                State::Differs => Some(WriteOutcome::Written),
            },
        )
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
        let path = self.resolve(rel)?;
        let (uid, gid) = self.ids(owner)?;
        let (parent, tmp) = temp_beside(&path)?;
        match fs::remove_file(&tmp) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing stale {}", tmp.display())),
        }
        match compare(&path, bytes, mode, uid, gid, self.can_chown)? {
            State::Same => return Ok(WriteOutcome::Unchanged),
            State::MetaOnly => {
                let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                failpoint();
                self.set_meta(&f, &path, mode, uid, gid)?;
                f.sync_all()
                    .with_context(|| format!("syncing {}", path.display()))?;
                return Ok(WriteOutcome::Fixed);
            }
            State::Differs => {}
        }
        self.create_dirs(&parent)?;
        failpoint();
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // mode and owner before the content lands, so a secret is never readable by others
        self.set_meta(&f, &tmp, mode, uid, gid)?;
        failpoint();
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        failpoint();
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        drop(f);
        failpoint();
        fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        failpoint();
        sync_dir(&parent)?;
        Ok(WriteOutcome::Written)
    }

    /// Write many files with the same guarantees as [`Root::write_atomic`]
    /// (each file: temp, mode/owner, fsync, rename; its directory fsync'd),
    /// but with the fsyncs issued concurrently so the filesystem commits them
    /// together (ext4 group commit): one first boot pays a few journal
    /// commits instead of two per file. Returns each file's outcome in order.
    pub fn write_many(&self, files: &[FileWrite<'_>]) -> Result<Vec<WriteOutcome>> {
        struct Pending {
            file: File,
            tmp: PathBuf,
            path: PathBuf,
            parent: PathBuf,
        }
        let mut outcomes = Vec::with_capacity(files.len());
        let mut pending = Vec::new();
        let mut dirs = std::collections::BTreeSet::new();
        for w in files {
            let path = self.resolve(w.path)?;
            let (uid, gid) = self.ids(w.owner)?;
            let (parent, tmp) = temp_beside(&path)?;
            match fs::remove_file(&tmp) {
                Ok(()) => {
                    dirs.insert(parent.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing stale {}", tmp.display()))
                }
            }
            match compare(&path, w.bytes, w.mode, uid, gid, self.can_chown)? {
                State::Same => outcomes.push(WriteOutcome::Unchanged),
                State::MetaOnly => {
                    let f =
                        File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                    failpoint();
                    self.set_meta(&f, &path, w.mode, uid, gid)?;
                    f.sync_all()
                        .with_context(|| format!("syncing {}", path.display()))?;
                    outcomes.push(WriteOutcome::Fixed);
                }
                State::Differs => {
                    // new directories are fsync'd with the others at the end
                    self.create_dirs_deferred(&parent, &mut dirs)?;
                    failpoint();
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&tmp)
                        .with_context(|| format!("creating {}", tmp.display()))?;
                    // mode and owner before the content lands
                    self.set_meta(&f, &tmp, w.mode, uid, gid)?;
                    failpoint();
                    f.write_all(w.bytes)
                        .with_context(|| format!("writing {}", tmp.display()))?;
                    pending.push(Pending {
                        file: f,
                        tmp,
                        path,
                        parent,
                    });
                    outcomes.push(WriteOutcome::Written);
                }
            }
        }
        failpoint();
        // every temp file durable before any rename
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = pending
                .iter()
                .map(|p| {
                    s.spawn(move || {
                        p.file
                            .sync_all()
                            .with_context(|| format!("syncing {}", p.tmp.display()))
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("fsync thread panicked"))??;
            }
            Ok(())
        })?;
        for p in pending {
            drop(p.file);
            failpoint();
            fs::rename(&p.tmp, &p.path)
                .with_context(|| format!("renaming {} to {}", p.tmp.display(), p.path.display()))?;
            dirs.insert(p.parent);
        }
        failpoint();
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = dirs.iter().map(|d| s.spawn(move || sync_dir(d))).collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("fsync thread panicked"))??;
            }
            Ok(())
        })?;
        Ok(outcomes)
    }

    fn set_meta(&self, f: &File, path: &Path, mode: u32, uid: u32, gid: u32) -> Result<()> {
        if self.can_chown {
            nix::unistd::fchown(
                std::os::fd::AsRawFd::as_raw_fd(f),
                Some(uid.into()),
                Some(gid.into()),
            )
            .with_context(|| format!("chown {}", path.display()))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
        Ok(())
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

impl WriteOutcome {
    fn max_with(self, other: WriteOutcome) -> WriteOutcome {
        use WriteOutcome::*;
        match (self, other) {
            (Written, _) | (_, Written) => Written,
            (Fixed, _) | (_, Fixed) => Fixed,
            _ => Unchanged,
        }
    }
}

/// Free-function form of [`Root::write_atomic`].
pub fn write_atomic(
    root: &Root,
    rel: &Path,
    bytes: &[u8],
    mode: u32,
    owner: &Owner,
) -> Result<WriteOutcome> {
    root.write_atomic(rel, bytes, mode, owner)
}

enum State {
    Same,
    MetaOnly,
    Differs,
}

fn compare(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
    check_owner: bool,
) -> Result<State> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::Differs),
        Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
    };
    if !m.file_type().is_file() || m.len() != bytes.len() as u64 {
        return Ok(State::Differs);
    }
    let mut cur = Vec::with_capacity(bytes.len());
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut cur))
        .with_context(|| format!("reading {}", path.display()))?;
    if cur != bytes {
        return Ok(State::Differs);
    }
    let meta_ok = m.mode() & 0o7777 == mode && (!check_owner || (m.uid() == uid && m.gid() == gid));
    Ok(if meta_ok {
        State::Same
    } else {
        State::MetaOnly
    })
}

/// Crash-test hook: with `NIB_FIRSTBOOT_FAILPOINT=N` in the environment the
/// process SIGKILLs itself at the N-th step boundary (before/after each
/// write, fsync and rename), so the crash-safety test can hit every step.
pub fn failpoint() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<u64>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        std::env::var("NIB_FIRSTBOOT_FAILPOINT")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(t) = *target {
        if COUNT.fetch_add(1, Ordering::SeqCst) + 1 == t {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// fsync a directory, so a rename or create in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
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

/// The directory of `path` and the temp file a write of `path` goes through.
/// A fixed temp name per target: a crash leaves at most this file, and the
/// next run removes or reuses it, so reruns converge to the same tree.
fn temp_beside(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let parent = path.parent().context("path has no parent")?.to_path_buf();
    let name = path
        .file_name()
        .context("path has no file name")?
        .to_string_lossy()
        .into_owned();
    let tmp = parent.join(format!(".{name}.nib-tmp"));
    Ok((parent, tmp))
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
