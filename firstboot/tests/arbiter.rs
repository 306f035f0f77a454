//! The quorum arbiter's first boot and the controllers' side of it: the
//! NSS databases first boot builds hold the certificates qnetd and qdevice
//! look for, chain to the pair's CA, are left alone when right and go when
//! `[arbiter]` goes; each seed carries only what its host needs; no key
//! reaches a log or a file outside its database and the root-only role
//! data copy. Needs certutil (libnss3-tools) and openssl.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

const QDEVICE_DB: &str = "etc/corosync/qdevice/net/nssdb";
const QNETD_DB: &str = "etc/corosync/qnetd/nssdb";

fn certutil(args: &[&str], db: &Path) -> String {
    let out = Command::new("certutil")
        .args(args)
        .arg("-d")
        .arg(format!("sql:{}", db.display()))
        .output()
        .expect("certutil (libnss3-tools) runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "certutil {args:?}: {all}");
    all
}

/// Lines of base64 of every private key of the fixture: what must not
/// appear where it should not.
fn key_lines() -> Vec<String> {
    let spec = arbiter_example();
    let a = spec.secrets.arbiter.expect("[secrets.arbiter]");
    [a.qnetd_key, a.cluster_key]
        .iter()
        .flat_map(|k| {
            k.expose()
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 40)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn applied(node: &str, extra: &[&str]) -> (tempfile::TempDir, String) {
    let root = fake_root();
    let seed = seed_of(&arbiter_example(), node, Some("iid-arbiter"));
    let out = apply(root.path(), seed.path(), extra);
    assert!(out.status.success(), "{}", text(&out));
    (root, text(&out))
}

#[test]
fn first_boot_builds_nss_databases_that_chain_to_the_ca() {
    let (c, log_c) = applied("controller01", &["--no-host-keys"]);
    let (a, log_a) = applied("arbiter01", &["--no-host-keys"]);
    let qdevice = c.path().join(QDEVICE_DB);
    let qnetd = a.path().join(QNETD_DB);
    // the nicknames corosync-qdevice and corosync-qnetd look for
    let list = certutil(&["-L"], &qdevice);
    assert!(
        list.contains("QNet CA") && list.contains("CT,c,c"),
        "{list}"
    );
    assert!(list.contains("Cluster Cert"), "{list}");
    assert!(certutil(&["-K"], &qdevice).contains("Cluster Cert"));
    let list = certutil(&["-L"], &qnetd);
    assert!(
        list.contains("QNet CA") && list.contains("QNetd Cert"),
        "{list}"
    );
    assert!(certutil(&["-K"], &qnetd).contains("QNetd Cert"));
    // NSS itself validates each certificate for its use against the CA
    let v = certutil(&["-V", "-u", "C", "-n", "Cluster Cert"], &qdevice);
    assert!(v.contains("certificate is valid"), "{v}");
    let v = certutil(&["-V", "-u", "V", "-n", "QNetd Cert"], &qnetd);
    assert!(v.contains("certificate is valid"), "{v}");
    // the client certificate names the cluster (qnetd checks the CN)
    let pem = certutil(&["-L", "-n", "Cluster Cert"], &qdevice);
    assert!(pem.contains("CN=openstack-ctl"), "{pem}");
    // modes: qnetd reads through its group, qdevice is root's; nothing
    // of the import left behind
    for (db, dir_mode, file_mode) in [(&qdevice, 0o700, 0o600), (&qnetd, 0o750, 0o640)] {
        assert_eq!(fs::metadata(db).expect("db").mode() & 0o7777, dir_mode);
        let mut names = Vec::new();
        for e in fs::read_dir(db).expect("read") {
            let e = e.expect("entry");
            assert_eq!(e.metadata().expect("m").mode() & 0o7777, file_mode);
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        assert_eq!(
            names,
            ["cert9.db", "key4.db", "pkcs11.txt"],
            "{}",
            db.display()
        );
        let parent = db.parent().expect("parent");
        assert!(
            fs::read_dir(parent).expect("read").all(|e| !e
                .expect("e")
                .file_name()
                .to_string_lossy()
                .contains("nib-new")),
            "scratch left in {}",
            parent.display()
        );
    }
    if nix::unistd::geteuid().is_root() {
        let gid = fs::metadata(&qnetd).expect("qnetd db").gid();
        assert_eq!(gid, 112, "coroqnetd's group of the fixture root");
    }
    // no key in a log; in the tree only in its database and the role data copy
    for l in key_lines() {
        assert!(!log_c.contains(&l) && !log_a.contains(&l), "a key in a log");
    }
    for root in [c.path(), a.path()] {
        for (rel, e) in snapshot(root, &|rel| rel.ends_with("/nssdb")) {
            let Entry::File { content, mode, .. } = e else {
                continue;
            };
            let body = String::from_utf8_lossy(&content);
            if key_lines().iter().any(|l| body.contains(l.as_str())) {
                assert_eq!(rel, "var/lib/nib/cluster.toml", "a key in {rel}");
                assert_eq!(mode, 0o600);
            }
        }
    }
}

#[test]
fn a_right_database_is_left_alone_and_goes_with_the_arbiter() {
    let (c, _) = applied("controller01", &["--no-host-keys"]);
    let db = c.path().join(QDEVICE_DB);
    let ino = |p: &Path| fs::metadata(p.join("cert9.db")).expect("cert9.db").ino();
    let before = ino(&db);
    let seed = seed_of(&arbiter_example(), "controller01", Some("iid-arbiter"));
    let out = apply(c.path(), seed.path(), &["--no-host-keys", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ino(&db), before, "a right database was rebuilt");
    assert!(text(&out).contains("unchanged /etc/corosync/qdevice/net/nssdb"));
    // a broken one is rebuilt
    fs::write(db.join("cert9.db"), b"broken").expect("break it");
    let out = apply(c.path(), seed.path(), &["--no-host-keys", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(certutil(&["-L"], &db).contains("Cluster Cert"));
    // without [arbiter] the pair runs two_node and keeps no qdevice database
    let out = apply(
        c.path(),
        example_seed("controller01", Some("iid-no-arbiter")).path(),
        &["--no-host-keys"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!db.exists(), "the qdevice database outlived [arbiter]");
    let conf = fs::read_to_string(c.path().join("etc/corosync/corosync.conf")).expect("conf");
    assert!(
        conf.contains("two_node: 1") && !conf.contains("device {"),
        "{conf}"
    );
}

#[test]
fn each_seed_carries_only_what_its_host_needs() {
    let spec = arbiter_example();
    let a = spec.secrets.arbiter.clone().expect("[secrets.arbiter]");
    let line = |pem: &str| pem.lines().nth(1).expect("base64").to_string();
    let c = nib_firstboot::seed::seed_files(&spec, "controller02", None).expect("seed");
    assert!(c.user_data.contains(&line(a.cluster_key.expose())));
    assert!(c.user_data.contains(&line(&a.ca_cert)));
    assert!(!c.user_data.contains(&line(a.qnetd_key.expose())));
    assert!(!c.user_data.contains(&line(&a.qnetd_cert)));
    let s = nib_firstboot::seed::seed_files(&spec, "arbiter01", None).expect("seed");
    assert!(s.meta_data.contains("local-hostname: arbiter01"));
    assert!(s.user_data.contains(&line(a.qnetd_key.expose())));
    assert!(!s.user_data.contains(&line(a.cluster_key.expose())));
    for v in [
        spec.secrets.erlang_cookie.expose(),
        spec.secrets.corosync_authkey.expose(),
        spec.secrets.mariadb_replication_password.expose(),
        spec.secrets.rabbitmq_openstack_password.expose(),
    ] {
        assert!(
            !s.user_data.contains(v),
            "the arbiter's seed holds a pair secret"
        );
    }
    let network = s.network_config.expect("[network]");
    assert!(network.contains("198.18.0.13/24"), "{network}");
}

#[test]
fn dry_run_names_the_database_not_its_key() {
    let root = fake_root();
    let seed = seed_of(&arbiter_example(), "arbiter01", Some("iid-dry"));
    let out = apply(root.path(), seed.path(), &["--no-host-keys", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("/etc/corosync/qnetd/nssdb (NSS database"),
        "{all}"
    );
    assert!(!root.path().join(QNETD_DB).exists());
    for l in key_lines() {
        assert!(!all.contains(&l));
    }
    // an arbiter is not a MariaDB node: nothing of the pair's is planned
    for absent in ["mysql", "rabbitmq", "corosync.conf", "cib.xml"] {
        assert!(
            !all.contains(absent),
            "{absent} in the arbiter's plan:\n{all}"
        );
    }
}
