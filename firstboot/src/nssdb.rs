//! The NSS databases of corosync-qnetd (on the arbiter) and
//! corosync-qdevice (on the controllers), made at first boot from the PEM
//! in the role data's `[secrets.arbiter]` (firstboot/doc/HA.md, "Arbiter").
//!
//! They hold what `corosync-qnetd-certutil -i` and
//! `corosync-qdevice-net-certutil -i/-m` would leave (same nicknames,
//! trust flags, empty database password), but with the certificates
//! `nib cluster init` made, so no certutil step is done by hand:
//!
//! - qnetd, `/etc/corosync/qnetd/nssdb`: the CA "QNet CA" (`CT,c,c`) and
//!   the server certificate "QNetd Cert" with its key;
//! - qdevice, `/etc/corosync/qdevice/net/nssdb`: the CA and the client
//!   certificate "Cluster Cert" (CN = the cluster name) with its key.
//!
//! A database is built in a scratch directory beside the real one and
//! swapped in whole, so a killed run leaves the old one or the new one. The
//! private key reaches the tools only through files in that 0700 directory
//! (a PKCS#12 made by `openssl pkcs12`, which reads the key on stdin, and a
//! one-time password file), never argv or a log; both files are removed
//! before the swap. A database that already holds exactly these
//! certificates and the key is left alone.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fsutil::{failpoint, sync_dir, Owner, Root};
use crate::log;
use crate::role::Secret;
use nib_host::Cmd;

pub const QNETD_DB: &str = "/etc/corosync/qnetd/nssdb";
pub const QDEVICE_DB: &str = "/etc/corosync/qdevice/net/nssdb";
pub const CA_NICKNAME: &str = "QNet CA";
/// corosync-qnetd's default `-S nss_server_cert_nickname`.
pub const QNETD_NICKNAME: &str = "QNetd Cert";
/// corosync-qdevice's default client certificate nickname.
pub const CLUSTER_NICKNAME: &str = "Cluster Cert";

/// One database to make.
pub struct NssDb<'a> {
    /// On the node.
    pub dir: &'static str,
    /// Of the directory and every file in it.
    pub owner: Owner,
    pub dir_mode: u32,
    pub file_mode: u32,
    pub ca_cert: &'a str,
    /// The certificate with a key, and its nickname.
    pub nickname: &'static str,
    pub cert: &'a str,
    pub key: &'a Secret,
}

impl NssDb<'_> {
    /// qnetd runs as `coroqnetd`: it reads the database through its group,
    /// as the package's own (0750/0640 root:coroqnetd).
    pub fn qnetd<'a>(ca_cert: &'a str, cert: &'a str, key: &'a Secret) -> NssDb<'a> {
        NssDb {
            dir: QNETD_DB,
            owner: Owner::new("root", "coroqnetd"),
            dir_mode: 0o750,
            file_mode: 0o640,
            ca_cert,
            nickname: QNETD_NICKNAME,
            cert,
            key,
        }
    }

    /// qdevice runs as root.
    pub fn qdevice<'a>(ca_cert: &'a str, cert: &'a str, key: &'a Secret) -> NssDb<'a> {
        NssDb {
            dir: QDEVICE_DB,
            owner: Owner::root(),
            dir_mode: 0o700,
            file_mode: 0o600,
            ca_cert,
            nickname: CLUSTER_NICKNAME,
            cert,
            key,
        }
    }
}

fn db_arg(dir: &Path) -> String {
    format!("sql:{}", dir.display())
}

/// The base64 body of a PEM block, whitespace dropped: how two spellings
/// of one certificate compare.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.split_whitespace())
        .collect()
}

/// Whether the database at `dir` holds exactly `db`'s certificates and a
/// key for its own one.
fn holds(dir: &Path, db: &NssDb) -> bool {
    if !dir.join("cert9.db").is_file() {
        return false;
    }
    let cert = |nick: &str| {
        Cmd::new("certutil")
            .arg("-L")
            .arg("-d")
            .arg(db_arg(dir))
            .args(["-n", nick, "-a"])
            .unlogged()
            .output_unchecked()
            .ok()
            .filter(|o| o.success())
            .map(|o| pem_body(&o.stdout_str()))
    };
    let keys = Cmd::new("certutil")
        .arg("-K")
        .arg("-d")
        .arg(db_arg(dir))
        .unlogged()
        .output_unchecked()
        .ok()
        .filter(|o| o.success())
        .map(|o| o.stdout_str())
        .unwrap_or_default();
    cert(CA_NICKNAME) == Some(pem_body(db.ca_cert))
        && cert(db.nickname) == Some(pem_body(db.cert))
        && keys.lines().any(|l| l.trim_end().ends_with(db.nickname))
}

/// Whether [`ensure`] would change the database (for `--dry-run`).
pub fn needs_update(root: &Root, db: &NssDb) -> Result<bool> {
    Ok(!holds(&root.resolve(Path::new(db.dir))?, db))
}

/// Make `db` under `root` unless it is already there. Returns whether it
/// changed anything.
pub fn ensure(root: &Root, db: &NssDb) -> Result<bool> {
    let dir = root.resolve(Path::new(db.dir))?;
    let (uid, gid) = root.ids(&db.owner)?;
    if holds(&dir, db) {
        // content right: only mode and owner may need fixing
        let mut fixed = false;
        for p in entries(&dir)?.into_iter().chain([dir.clone()]) {
            let want = if p == dir { db.dir_mode } else { db.file_mode };
            fixed |= set_mode_owner(root, &p, want, uid, gid)?;
        }
        if fixed {
            log::info(&format!("fixed mode/owner of {}", db.dir));
        } else {
            log::info(&format!("unchanged {}", db.dir));
        }
        return Ok(fixed);
    }
    let parent = dir.parent().context("NSS database has no parent")?;
    root.create_dirs(parent)?;
    let scratch = scratch_of(&dir);
    remove_dir(&scratch)?;
    fs::create_dir(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o700))?;
    build(&scratch, db)?;
    for p in entries(&scratch)? {
        set_mode_owner(root, &p, db.file_mode, uid, gid)?;
        fs::File::open(&p).and_then(|f| f.sync_all())?;
    }
    set_mode_owner(root, &scratch, db.dir_mode, uid, gid)?;
    sync_dir(&scratch)?;
    failpoint();
    if fs::symlink_metadata(&dir).is_ok() {
        // swap: the old database ends up in the scratch name, then goes
        match nix::fcntl::renameat2(
            None,
            &scratch,
            None,
            &dir,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        ) {
            Ok(()) => {
                sync_dir(parent)?;
                failpoint();
                remove_dir(&scratch)?;
            }
            // overlayfs (the PXE root, the e2e nodes) refuses to rename
            // a directory of its lower layer (the image's empty nssdb) in
            // any way: it goes, then the new one is renamed in. A crash
            // between leaves no database and the scratch, which the next
            // run rebuilds (`holds` is false without one).
            Err(nix::errno::Errno::EXDEV) => {
                remove_dir(&dir)?;
                sync_dir(parent)?;
                failpoint();
                fs::rename(&scratch, &dir)
                    .with_context(|| format!("installing {}", dir.display()))?;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("swapping {} into place", dir.display()))
            }
        }
    } else {
        fs::rename(&scratch, &dir).with_context(|| format!("installing {}", dir.display()))?;
    }
    sync_dir(parent)?;
    log::info(&format!(
        "wrote {} ({CA_NICKNAME:?}, {:?} with its key)",
        db.dir, db.nickname
    ));
    Ok(true)
}

/// Remove the database at `dir` (on the node) when it is there: a pair
/// whose `[arbiter]` went away keeps no qdevice database, and
/// corosync-qdevice.service does not start without one.
pub fn remove(root: &Root, dir: &str) -> Result<bool> {
    let p = root.resolve(Path::new(dir))?;
    if fs::symlink_metadata(&p).is_err() {
        return Ok(false);
    }
    // out of the way first: a crash leaves the scratch name, which the
    // next `ensure` or `remove` clears
    let scratch = scratch_of(&p);
    remove_dir(&scratch)?;
    fs::rename(&p, &scratch).with_context(|| format!("removing {}", p.display()))?;
    if let Some(parent) = p.parent() {
        sync_dir(parent)?;
    }
    remove_dir(&scratch)?;
    log::info(&format!("removed {dir} (no [arbiter] in the role data)"));
    Ok(true)
}

fn scratch_of(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!(".{name}.nib-new"))
}

fn build(scratch: &Path, db: &NssDb) -> Result<()> {
    let d = db_arg(scratch);
    Cmd::new("certutil")
        .args(["-N", "-d", &d, "--empty-password"])
        .run()?;
    Cmd::new("certutil")
        .args(["-A", "-d", &d, "-n", CA_NICKNAME, "-t", "CT,c,c", "-a"])
        .input(db.ca_cert.as_bytes().to_vec())
        .run()?;
    // The key goes to openssl on stdin and comes back as a PKCS#12 under
    // a one-time password, both files in the 0700 scratch directory.
    let p12 = scratch.join("nib-import.p12");
    let pass = scratch.join("nib-import.pass");
    let one_time = crate::seed::random_alnum(32)?;
    nib_host::write::write_file(&pass, one_time.as_bytes(), 0o600)?;
    let mut input = db.key.expose().trim().as_bytes().to_vec();
    input.push(b'\n');
    input.extend_from_slice(db.cert.trim().as_bytes());
    input.push(b'\n');
    let imported = Cmd::new("openssl")
        .args(["pkcs12", "-export", "-name", db.nickname, "-passout"])
        .arg(format!("file:{}", pass.display()))
        .arg("-out")
        .arg(&p12)
        .input(input)
        .run()
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            Cmd::new("pk12util")
                .arg("-i")
                .arg(&p12)
                .args(["-d", &d, "-w"])
                .arg(&pass)
                .run()
                .map_err(anyhow::Error::from)
        });
    for f in [&p12, &pass] {
        match fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    imported?;
    if !holds(scratch, db) {
        bail!(
            "the NSS database made for {} does not list {CA_NICKNAME:?} and {:?} with its key",
            db.dir,
            db.nickname
        );
    }
    Ok(())
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        v.push(e?.path());
    }
    v.sort();
    Ok(v)
}

fn set_mode_owner(root: &Root, p: &Path, mode: u32, uid: u32, gid: u32) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(p).with_context(|| format!("stat {}", p.display()))?;
    let mut changed = false;
    if m.mode() & 0o7777 != mode {
        fs::set_permissions(p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", p.display()))?;
        changed = true;
    }
    if root.can_chown() && (m.uid() != uid || m.gid() != gid) {
        nix::unistd::chown(p, Some(uid.into()), Some(gid.into()))
            .with_context(|| format!("chown {}", p.display()))?;
        changed = true;
    }
    Ok(changed)
}

fn remove_dir(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}
