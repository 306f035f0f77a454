//! Golden files: every file `apply` writes for each node of the example
//! cluster, byte for byte, plus a MANIFEST of modes and owners; and the
//! same for the example with a quorum arbiter (`cluster-arbiter.toml`:
//! golden/with-arbiter/, the pair and the arbiter), whose NSS databases
//! (binary, different on every run) are checked by tests/arbiter.rs
//! instead. Regenerate with `NIB_BLESS=1 cargo test -p nib-firstboot
//! --test golden` and review the diff like code.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;

fn names(path: &Path) -> BTreeMap<u32, String> {
    fs::read_to_string(path)
        .expect("read")
        .lines()
        .filter_map(|l| {
            let f: Vec<_> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
        })
        .collect()
}

fn check_node(node: &str) {
    check(&example(), "", node);
}

/// `spec`'s `node` against golden/`set`/`node`.
fn check(spec: &nib_firstboot::role::ClusterSpec, set: &str, node: &str) {
    let root = fake_root();
    let s = nib_firstboot::seed::seed_files(spec, node, Some("iid-golden")).expect("seed");
    let seed = seed_dir(&s.meta_data, &s.user_data, s.network_config.as_deref());
    let out = apply(root.path(), seed.path(), &["--no-host-keys"]);
    assert!(out.status.success(), "{}", text(&out));
    let snap = snapshot(root.path(), &|rel| {
        rel == "etc/passwd" || rel == "etc/group" || rel.ends_with("/nssdb")
    });
    let users = names(&fixtures().join("root/etc/passwd"));
    let groups = names(&fixtures().join("root/etc/group"));
    let running_as_root = nix::unistd::geteuid().is_root();
    let mut manifest = String::new();
    let mut files = BTreeMap::new();
    for (rel, e) in &snap {
        if let Entry::File {
            mode,
            uid,
            gid,
            content,
        } = e
        {
            let owner = if running_as_root {
                format!("{}:{}", users[uid], groups[gid])
            } else {
                "-".into()
            };
            manifest.push_str(&format!("{mode:04o} {owner} /{rel}\n"));
            files.insert(rel.clone(), content.clone());
        }
    }
    let golden = fixtures().join("golden").join(set).join(node);
    if std::env::var_os("NIB_BLESS").is_some() {
        let _ = fs::remove_dir_all(&golden);
        for (rel, c) in &files {
            let p = golden.join(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, c).expect("write");
        }
        fs::write(golden.join("MANIFEST"), &manifest).expect("write");
        return;
    }
    let want_manifest =
        fs::read_to_string(golden.join("MANIFEST")).expect("golden MANIFEST (bless first)");
    if running_as_root {
        assert_eq!(
            manifest,
            want_manifest,
            "modes/owners differ from {}",
            golden.join("MANIFEST").display()
        );
    } else {
        let strip = |s: &str| {
            s.lines()
                .map(|l| format!("{} {}", &l[..4], l.rsplit(' ').next().unwrap_or("")))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&manifest), strip(&want_manifest));
    }
    for (rel, c) in &files {
        let want =
            fs::read(golden.join(rel)).unwrap_or_else(|_| panic!("no golden file for {rel}"));
        assert!(
            &want == c,
            "{rel} differs from its golden file\n--- golden\n{}\n--- rendered\n{}",
            String::from_utf8_lossy(&want),
            String::from_utf8_lossy(c)
        );
    }
}

#[test]
fn golden_controller01() {
    check_node("controller01");
}

#[test]
fn golden_controller02() {
    check_node("controller02");
}

#[test]
fn golden_with_arbiter_controller01() {
    check(&arbiter_example(), "with-arbiter", "controller01");
}

#[test]
fn golden_with_arbiter_controller02() {
    check(&arbiter_example(), "with-arbiter", "controller02");
}

#[test]
fn golden_with_arbiter_arbiter01() {
    check(&arbiter_example(), "with-arbiter", "arbiter01");
}
