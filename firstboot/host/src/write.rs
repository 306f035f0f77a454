//! The one way nib writes a file that must never be seen half-written (a
//! node's configuration and secrets, a seed, a cache record, an output):
//! a temp file beside the target, created 0600, mode and owner set before
//! the content lands (a secret is never readable by others), written,
//! fsync'd, renamed over the target, and the directory fsync'd. Identical
//! content with the right mode and owner is not rewritten. A crash leaves
//! the old file or the new one, and at most the temp file, which the next
//! write removes.
//!
//! [`publish`] is the same last step for something built under a temp name
//! (a directory tree, a blob): fsync it, rename it into place, fsync the
//! directory.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An I/O error with what was being done to which path.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", .path.display())]
pub struct Error {
    pub what: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

fn ctx<T>(r: io::Result<T>, what: &'static str, path: &Path) -> Result<T, Error> {
    r.map_err(|source| Error {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// One file to write.
#[derive(Debug, Clone, Copy)]
pub struct FileWrite<'a> {
    pub path: &'a Path,
    pub bytes: &'a [u8],
    pub mode: u32,
    /// Numeric owner; `None` leaves it to the writing process.
    pub owner: Option<(u32, u32)>,
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

impl WriteOutcome {
    /// The larger change of two (Written > Fixed > Unchanged).
    pub fn max_with(self, other: WriteOutcome) -> WriteOutcome {
        use WriteOutcome::*;
        match (self, other) {
            (Written, _) | (_, Written) => Written,
            (Fixed, _) | (_, Fixed) => Fixed,
            _ => Unchanged,
        }
    }
}

/// What writing `bytes` with `mode`/`owner` to `path` would do: `None`
/// when nothing would change (a dry run asks this).
pub fn needs_write(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<Option<WriteOutcome>, Error> {
    Ok(match compare(path, bytes, mode, owner)? {
        State::Same => None,
        State::MetaOnly => Some(WriteOutcome::Fixed),
        State::Differs => Some(WriteOutcome::Written),
    })
}

/// Write one file (see the module doc). Missing parent directories are
/// created (0755, the process's owner), and synced with the file.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<WriteOutcome, Error> {
    let o = write_many(&[FileWrite {
        path,
        bytes,
        mode,
        owner,
    }])?;
    Ok(o[0])
}

/// [`write_atomic`] for a file of the process's own (no owner to set),
/// when what it did does not matter.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    write_atomic(path, bytes, mode, None).map(|_| ())
}

/// Write many files with the guarantees of [`write_atomic`], the fsyncs
/// issued concurrently so the filesystem commits them together (ext4
/// group commit): a first boot pays a few journal commits instead of two
/// per file. Every temp file is durable before any rename. Returns each
/// file's outcome, in order.
pub fn write_many(files: &[FileWrite<'_>]) -> Result<Vec<WriteOutcome>, Error> {
    struct Pending {
        file: File,
        tmp: PathBuf,
        path: PathBuf,
    }
    let mut outcomes = Vec::with_capacity(files.len());
    let mut pending = Vec::new();
    let mut dirs = BTreeSet::new();
    for w in files {
        let (parent, tmp) = temp_beside(w.path)?;
        match fs::remove_file(&tmp) {
            Ok(()) => {
                dirs.insert(parent.clone());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return ctx(Err(e), "removing stale", &tmp),
        }
        match compare(w.path, w.bytes, w.mode, w.owner)? {
            State::Same => outcomes.push(WriteOutcome::Unchanged),
            State::MetaOnly => {
                let f = ctx(File::open(w.path), "opening", w.path)?;
                failpoint();
                set_meta(&f, w.path, w.mode, w.owner)?;
                ctx(f.sync_all(), "syncing", w.path)?;
                outcomes.push(WriteOutcome::Fixed);
            }
            State::Differs => {
                create_parents(&parent, &mut dirs)?;
                let f = write_temp(&tmp, w.bytes, w.mode, w.owner)?;
                pending.push(Pending {
                    file: f,
                    tmp,
                    path: w.path.to_path_buf(),
                });
                dirs.insert(parent);
                outcomes.push(WriteOutcome::Written);
            }
        }
    }
    failpoint();
    sync_all(pending.iter().map(|p| (&p.file, p.tmp.as_path())))?;
    for p in pending {
        drop(p.file);
        failpoint();
        ctx(fs::rename(&p.tmp, &p.path), "renaming into", &p.path)?;
    }
    failpoint();
    let opened: Vec<(File, &Path)> = dirs
        .iter()
        .map(|d| ctx(File::open(d), "opening directory", d).map(|f| (f, d.as_path())))
        .collect::<Result<_, _>>()?;
    sync_all(opened.iter().map(|(f, d)| (f, *d)))?;
    Ok(outcomes)
}

/// Write a file that must not exist yet (a new cluster.toml), never over
/// one that does, even one another process makes meanwhile: the content
/// goes to a temp file of this call's own, is fsync'd, and is published
/// with link(2), which fails with `AlreadyExists`. Where the filesystem
/// has no hard links (vfat, exFAT: a USB stick) it is created in place
/// with O_EXCL instead (still never over a file; a crash may leave it
/// short there). The parent directory must exist.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let (parent, beside) = temp_beside(path)?;
    let tmp = unique(&beside);
    let linked = write_temp(&tmp, bytes, mode, None)
        .and_then(|f| ctx(f.sync_all(), "syncing", &tmp))
        .and_then(|()| ctx(fs::hard_link(&tmp, path), "creating", path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Err(e) if no_hard_links(&e.source) => {
            let f = write_temp(path, bytes, mode, None)?;
            ctx(f.sync_all(), "syncing", path)?;
        }
        other => other?,
    }
    sync_dir(&parent)
}

/// `tmp` made this call's own: pid and a clock reading, so two writers of
/// one file never share a temp.
fn unique(tmp: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut name = tmp.as_os_str().to_os_string();
    name.push(format!(".{}.{nanos}", std::process::id()));
    PathBuf::from(name)
}

fn no_hard_links(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::errno::Errno::EPERM as i32 || code == nix::errno::Errno::EOPNOTSUPP as i32
    )
}

/// Create `dir` and its missing ancestors; each new one's parent goes into
/// `dirs`, to be fsync'd with the rest.
fn create_parents(dir: &Path, dirs: &mut BTreeSet<PathBuf>) -> Result<(), Error> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    for m in missing.iter().rev() {
        match fs::create_dir(m) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return ctx(Err(e), "creating directory", m),
        }
        if let Some(p) = m.parent() {
            dirs.insert(p.to_path_buf());
        }
        dirs.insert(m.clone());
    }
    Ok(())
}

/// The temp file of a write: created 0600, mode and owner set before the
/// content lands (a secret is never readable by others), content written;
/// not yet synced.
fn write_temp(
    tmp: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<File, Error> {
    failpoint();
    let mut f = ctx(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp),
        "creating",
        tmp,
    )?;
    set_meta(&f, tmp, mode, owner)?;
    failpoint();
    ctx(f.write_all(bytes), "writing", tmp)?;
    Ok(f)
}

/// fsync each file, side by side.
fn sync_all<'a>(files: impl Iterator<Item = (&'a File, &'a Path)>) -> Result<(), Error> {
    let files: Vec<_> = files.collect();
    if files.len() <= 1 {
        for (f, p) in files {
            ctx(f.sync_all(), "syncing", p)?;
        }
        return Ok(());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|(f, p)| s.spawn(move || ctx(f.sync_all(), "syncing", p)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    })
}

/// fsync a directory, so a rename or create in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    ctx(
        File::open(dir).and_then(|d| d.sync_all()),
        "syncing directory",
        dir,
    )
}

/// Make `tmp` (a file, or a directory tree with everything in it) durable,
/// rename it to `dest` and fsync `dest`'s directory: what is published is
/// never seen incomplete after a crash.
pub fn publish(tmp: &Path, dest: &Path) -> Result<(), Error> {
    sync_tree(tmp)?;
    ctx(fs::rename(tmp, dest), "renaming into", dest)?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// fsync every regular file and directory under `p` (symlinks are part of
/// their directory).
pub fn sync_tree(p: &Path) -> Result<(), Error> {
    let mut files = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = ctx(fs::symlink_metadata(&d), "stat", &d)?;
        if m.is_dir() {
            for e in ctx(fs::read_dir(&d), "reading directory", &d)? {
                stack.push(ctx(e, "reading directory", &d)?.path());
            }
            files.push(d);
        } else if m.is_file() {
            files.push(d);
        }
    }
    // in batches, side by side: a rootfs tree has ~100,000 entries
    // 256 open at a time: far below the usual soft limit of 1024 files
    for chunk in files.chunks(256) {
        let opened: Vec<(File, &Path)> = chunk
            .iter()
            .map(|f| ctx(File::open(f), "opening", f).map(|h| (h, f.as_path())))
            .collect::<Result<_, _>>()?;
        let n = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        let per = opened.len().div_ceil(n);
        std::thread::scope(|s| {
            let handles: Vec<_> = opened
                .chunks(per.max(1))
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .try_for_each(|(f, p)| ctx(f.sync_all(), "syncing", p))
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        })?;
    }
    Ok(())
}

fn set_meta(f: &File, path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), Error> {
    if let Some((uid, gid)) = owner {
        ctx(
            nix::unistd::fchown(
                std::os::fd::AsRawFd::as_raw_fd(f),
                Some(uid.into()),
                Some(gid.into()),
            )
            .map_err(io::Error::from),
            "chown",
            path,
        )?;
    }
    ctx(
        f.set_permissions(fs::Permissions::from_mode(mode)),
        "chmod",
        path,
    )
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
    owner: Option<(u32, u32)>,
) -> Result<State, Error> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::Differs),
        Err(e) => return ctx(Err(e), "stat", path),
    };
    if !m.file_type().is_file() || m.len() != bytes.len() as u64 {
        return Ok(State::Differs);
    }
    let mut cur = Vec::with_capacity(bytes.len());
    ctx(
        File::open(path).and_then(|mut f| f.read_to_end(&mut cur)),
        "reading",
        path,
    )?;
    if cur != bytes {
        return Ok(State::Differs);
    }
    let owner_ok = owner.map_or(true, |(u, g)| m.uid() == u && m.gid() == g);
    Ok(if m.mode() & 0o7777 == mode && owner_ok {
        State::Same
    } else {
        State::MetaOnly
    })
}

/// The directory of `path` and the temp file a write of `path` goes
/// through. A fixed temp name per target: a crash leaves at most this
/// file, and the next write removes it, so reruns converge.
fn temp_beside(path: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let no_name = || Error {
        what: "no file name in",
        path: path.to_path_buf(),
        source: io::ErrorKind::InvalidInput.into(),
    };
    let parent = path.parent().ok_or_else(no_name)?;
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let name = path.file_name().ok_or_else(no_name)?.to_string_lossy();
    Ok((
        parent.to_path_buf(),
        parent.join(format!(".{name}.nib-tmp")),
    ))
}

/// Crash-test hook: with `NIB_FIRSTBOOT_FAILPOINT=N` in the environment the
/// process SIGKILLs itself at the N-th step boundary (before/after each
/// write, fsync and rename), so the crash-safety tests can hit every step.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_sets_mode_then_skips_identical_and_fixes_mode() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("f");
        assert_eq!(
            write_atomic(&p, b"one", 0o640, None).expect("w"),
            WriteOutcome::Written
        );
        assert_eq!(fs::read(&p).expect("read"), b"one");
        assert_eq!(fs::metadata(&p).expect("m").mode() & 0o7777, 0o640);
        assert_eq!(
            write_atomic(&p, b"one", 0o640, None).expect("w"),
            WriteOutcome::Unchanged
        );
        assert_eq!(
            write_atomic(&p, b"one", 0o600, None).expect("w"),
            WriteOutcome::Fixed
        );
        assert_eq!(fs::metadata(&p).expect("m").mode() & 0o7777, 0o600);
        assert_eq!(
            write_atomic(&p, b"two", 0o600, None).expect("w"),
            WriteOutcome::Written
        );
        assert_eq!(fs::read(&p).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(d.path())
            .expect("ls")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("f")],
            "no temp file left"
        );
    }

    #[test]
    fn a_stale_temp_is_removed_and_a_symlink_target_replaced_not_followed() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("f");
        fs::write(d.path().join(".f.nib-tmp"), b"crashed").expect("stale");
        let elsewhere = d.path().join("elsewhere");
        fs::write(&elsewhere, b"keep").expect("w");
        std::os::unix::fs::symlink(&elsewhere, &p).expect("symlink");
        write_atomic(&p, b"new", 0o644, None).expect("w");
        assert!(!d.path().join(".f.nib-tmp").exists());
        assert!(fs::symlink_metadata(&p).expect("m").is_file());
        assert_eq!(fs::read(&elsewhere).expect("r"), b"keep");
    }

    #[test]
    fn many_match_one_by_one() {
        let d = tempfile::tempdir().expect("tmp");
        fs::create_dir(d.path().join("sub")).expect("mkdir");
        let (a, b) = (d.path().join("a"), d.path().join("sub/b"));
        write_atomic(&a, b"a", 0o644, None).expect("w");
        let o = write_many(&[
            FileWrite {
                path: &a,
                bytes: b"a",
                mode: 0o644,
                owner: None,
            },
            FileWrite {
                path: &b,
                bytes: b"b",
                mode: 0o600,
                owner: None,
            },
        ])
        .expect("many");
        assert_eq!(o, vec![WriteOutcome::Unchanged, WriteOutcome::Written]);
        assert_eq!(fs::read(&b).expect("r"), b"b");
    }

    #[test]
    fn missing_directories_are_made_and_errors_name_the_path() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("a/b/f");
        write_atomic(&p, b"x", 0o644, None).expect("made");
        assert_eq!(fs::read(&p).expect("r"), b"x");
        fs::write(d.path().join("file"), b"").expect("w");
        let e = write_atomic(&d.path().join("file/f"), b"x", 0o644, None).expect_err("not a dir");
        assert!(e.to_string().contains("file/.f.nib-tmp"), "{e}");
    }

    #[test]
    fn write_new_never_replaces() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("cluster.toml");
        write_new(&p, b"first", 0o600).expect("new");
        assert_eq!(fs::metadata(&p).expect("m").mode() & 0o7777, 0o600);
        let e = write_new(&p, b"second", 0o600).expect_err("exists");
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).expect("r"), b"first");
        assert_eq!(
            fs::read_dir(d.path()).expect("ls").count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn publish_moves_a_tree_into_place() {
        let d = tempfile::tempdir().expect("tmp");
        let tmp = d.path().join("t.tmp");
        fs::create_dir_all(tmp.join("x/y")).expect("mkdir");
        fs::write(tmp.join("x/y/z"), b"z").expect("w");
        let dest = d.path().join("t");
        publish(&tmp, &dest).expect("publish");
        assert_eq!(fs::read(dest.join("x/y/z")).expect("r"), b"z");
        assert!(!tmp.exists());
    }
}
