//! What no layer may keep: anything that differs between two builds or must
//! differ between two nodes (found by building twice and diffing; see
//! tests/peers/PEERS.md, "What differs between two builds", for what the
//! peers leave). Applied to every layer before it is
//! sealed, through the merged view, so a file from a lower layer is removed
//! by a whiteout.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::fsutil::remove_any;

/// Build logs: removed outright.
const BUILD_LOGS: &[&str] = &[
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
];

/// Per-node secrets and identities, per-build state.
const REMOVE: &[&str] = &[
    // a node gets its own at first boot (nib-firstboot writes ssh host keys)
    "etc/ssh/ssh_host_rsa_key",
    "etc/ssh/ssh_host_rsa_key.pub",
    "etc/ssh/ssh_host_ecdsa_key",
    "etc/ssh/ssh_host_ecdsa_key.pub",
    "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
    "etc/ssh/ssh_host_dsa_key",
    "etc/ssh/ssh_host_dsa_key.pub",
    "etc/ssl/private/ssl-cert-snakeoil.key",
    "etc/ssl/certs/ssl-cert-snakeoil.pem",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
    // cluster secrets come from the role data (firstboot/doc/HA.md, "corosync")
    "etc/pacemaker/authkey",
    "etc/corosync/authkey",
    // the package default would start a one-node cluster; first boot writes the real one
    "etc/corosync/corosync.conf",
    // seed 000: the cookie is shared by the pair, written before first start
    "var/lib/rabbitmq/.erlang.cookie",
    "var/lib/rabbitmq/mnesia",
    "var/cache/ldconfig/aux-cache",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    // copied from the build host by mmdebstrap
    "etc/resolv.conf",
];

/// Directories whose content goes, the directory (owner, mode) stays.
const EMPTY_DIRS: &[&str] = &[
    // first boot runs mariadb-install-db: the packaged datadir has
    // build-time timestamps and would be identical on both nodes
    "var/lib/mysql",
    // corosync-qnetd's postinst makes an NSS database with a fresh CA and
    // server key: a per-build secret; first boot makes the arbiter's own
    // from its seed (firstboot/src/nssdb.rs)
    "etc/corosync/qnetd/nssdb",
    "var/lib/apt/lists",
    "var/cache/apt/archives",
    "tmp",
    "var/tmp",
];

/// Keep these inside EMPTY_DIRS (apt's own bookkeeping).
const KEEP_IN_DIRS: &[&str] = &["partial", "lock"];

/// Suffixes removed in these directories (backups dpkg/debconf keep of the
/// previous state).
const REMOVE_SUFFIX: &[(&str, &str)] = &[("var/cache/debconf", "-old"), ("var/lib/dpkg", "-old")];

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Apply to a root (a merged overlay or a bootstrap dir).
pub fn clean_root(root: &Path) -> Result<()> {
    for rel in BUILD_LOGS.iter().chain(REMOVE.iter()) {
        remove_any(&root.join(rel))?;
    }
    for d in EMPTY_DIRS {
        let dir = root.join(d);
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            let name = e.file_name();
            let apt_dir = d.contains("/apt/");
            if apt_dir && KEEP_IN_DIRS.iter().any(|k| name == *k) {
                continue;
            }
            remove_any(&e.path())?;
        }
    }
    for (d, suffix) in REMOVE_SUFFIX {
        let dir = root.join(d);
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            if e.file_name().to_string_lossy().ends_with(suffix) {
                remove_any(&e.path())?;
            }
        }
    }
    // The snakeoil certificate's hash link in /etc/ssl/certs.
    let certs = root.join("etc/ssl/certs");
    if let Ok(rd) = fs::read_dir(&certs) {
        for e in rd {
            let e = e?;
            if let Ok(t) = fs::read_link(e.path()) {
                if t.to_string_lossy().contains("ssl-cert-snakeoil") {
                    remove_any(&e.path())?;
                }
            }
        }
    }
    // Empty machine-id: systemd makes the node's own at boot.
    let mid = root.join("etc/machine-id");
    if let Ok(m) = fs::symlink_metadata(&mid) {
        if m.is_file() && m.len() > 0 {
            fs::write(&mid, b"").with_context(|| format!("emptying {}", mid.display()))?;
        }
    }
    // Host name: the build host's must not leak; first boot sets the node's.
    let hn = root.join("etc/hostname");
    if exists(&hn) && fs::read(&hn).ok().as_deref() != Some(b"localhost\n".as_slice()) {
        fs::write(&hn, b"localhost\n").with_context(|| format!("writing {}", hn.display()))?;
    }
    // Logs packages create: keep the file (owner and mode matter), drop content.
    truncate_logs(&root.join("var/log"))?;
    Ok(())
}

fn truncate_logs(dir: &Path) -> Result<()> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let m = fs::symlink_metadata(e.path())?;
        if m.is_dir() {
            truncate_logs(&e.path())?;
        } else if m.is_file() && m.size() > 0 {
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(e.path())
                .with_context(|| format!("truncating {}", e.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_secrets_logs_and_ids() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        for (p, c) in [
            ("etc/ssh/ssh_host_ed25519_key", "k"),
            ("etc/machine-id", "0123"),
            ("var/log/dpkg.log", "x"),
            ("var/log/mysql/error.log", "x"),
            ("var/lib/mysql/ibdata1", "x"),
            ("var/lib/apt/lists/lock", ""),
            ("var/lib/apt/lists/deb_Packages", "x"),
            ("var/lib/dpkg/status-old", "x"),
            ("var/lib/dpkg/status", "x"),
            ("var/lib/rabbitmq/mnesia/x", "x"),
            ("etc/corosync/qnetd/nssdb/key4.db", "k"),
            ("etc/hostname", "buildhost\n"),
        ] {
            let p = r.join(p);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, c).expect("write");
        }
        clean_root(r).expect("clean");
        assert!(!r.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert_eq!(fs::read(r.join("etc/machine-id")).expect("mid"), b"");
        assert!(!r.join("var/log/dpkg.log").exists());
        assert_eq!(
            fs::metadata(r.join("var/log/mysql/error.log"))
                .expect("log")
                .len(),
            0
        );
        assert!(r.join("var/lib/mysql").is_dir() && !r.join("var/lib/mysql/ibdata1").exists());
        assert!(r.join("var/lib/apt/lists/lock").exists());
        assert!(!r.join("var/lib/apt/lists/deb_Packages").exists());
        assert!(
            !r.join("var/lib/dpkg/status-old").exists() && r.join("var/lib/dpkg/status").exists()
        );
        assert!(!r.join("var/lib/rabbitmq/mnesia").exists());
        assert!(
            r.join("etc/corosync/qnetd/nssdb").is_dir()
                && !r.join("etc/corosync/qnetd/nssdb/key4.db").exists()
        );
        assert_eq!(
            fs::read(r.join("etc/hostname")).expect("hn"),
            b"localhost\n"
        );
    }
}
