//! `nib plan`, `nib inspect` and input errors, through the real binary in a
//! fresh temp dir per test. No network, no root needed.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn nib(args: &[&str], cwd: &Path, cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nib"))
        .args(args)
        .current_dir(cwd)
        .env("NIB_CACHE", cache)
        .output()
        .expect("running nib")
}

/// A copy of images/ and layers/ to break on purpose.
fn copy_workspace() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    let st = Command::new("cp")
        .arg("-r")
        .arg(workspace_root().join("images"))
        .arg(workspace_root().join("layers"))
        .arg(t.path())
        .status()
        .expect("cp");
    assert!(st.success());
    t
}

#[test]
fn plan_focal_offline_shows_ubuntu_package_names() {
    let t = tempfile::tempdir().expect("tempdir");
    let o = nib(
        &["plan", "images/controller.toml"],
        &workspace_root(),
        &t.path().join("empty-cache"),
    );
    let s = text(&o);
    assert!(o.status.success(), "{s}");
    assert!(s.contains("focal"), "{s}");
    assert!(s.contains("linux-image-generic"), "{s}");
    assert!(!s.contains("linux-image-amd64"), "{s}");
    for p in [
        "mariadb-server",
        "rabbitmq-server",
        "memcached",
        "corosync",
        "pacemaker",
        "crmsh",
    ] {
        assert!(s.contains(p), "{p} missing: {s}");
    }
    let o = nib(
        &["plan", "images/controller.toml", "--json"],
        &workspace_root(),
        &t.path().join("empty-cache"),
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("plan --json is JSON");
    assert_eq!(v["suite"], "focal");
    let layers: Vec<&str> = v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        layers,
        [
            "base",
            "mariadb",
            "rabbitmq",
            "memcached",
            "cluster",
            "firstboot",
            "finalize"
        ]
    );
}

#[test]
fn plan_keys_are_stable_and_follow_files() {
    let w = copy_workspace();
    let cache = w.path().join("cache");
    let key_of = |name: &str| -> String {
        let o = nib(
            &["plan", "images/controller-bookworm.toml", "--json"],
            w.path(),
            &cache,
        );
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        v["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .find(|l| l["name"] == name)
            .expect("layer")["key"]
            .as_str()
            .expect("key")
            .to_string()
    };
    let (base1, top1) = (key_of("base"), key_of("firstboot"));
    assert_eq!(base1, key_of("base"), "same input, same key");
    let f = w.path().join("layers/firstboot/files/etc/nib-marker");
    fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
    fs::write(&f, "one\n").expect("write");
    let top2 = key_of("firstboot");
    assert_ne!(top1, top2, "a file in files/ is part of the key");
    assert_eq!(base1, key_of("base"), "a change on top keeps lower keys");
}

fn expect_invalid(w: &Path, image: &str, needles: &[&str]) {
    let o = nib(&["plan", image], w, &w.join("cache"));
    let s = text(&o);
    assert_eq!(o.status.code(), Some(2), "{s}");
    for n in needles {
        assert!(s.contains(n), "{n:?} not in: {s}");
    }
}

#[test]
fn unknown_key_in_layer_is_exit_2_naming_file_and_key() {
    let w = copy_workspace();
    let p = w.path().join("layers/memcached/layer.toml");
    let t = fs::read_to_string(&p).expect("read");
    fs::write(&p, format!("{t}\npackges = [\"x\"]\n")).expect("write");
    expect_invalid(
        w.path(),
        "images/controller-bookworm.toml",
        &["layers/memcached/layer.toml", "packges"],
    );
}

#[test]
fn unknown_key_in_image_is_exit_2() {
    let w = copy_workspace();
    let p = w.path().join("images/controller-bookworm.toml");
    let t = fs::read_to_string(&p).expect("read");
    fs::write(&p, format!("{t}\nmirorr = \"x\"\n")).expect("write");
    expect_invalid(
        w.path(),
        "images/controller-bookworm.toml",
        &["controller-bookworm.toml", "mirorr"],
    );
}

#[test]
fn missing_layer_and_unknown_suite_are_exit_2() {
    let w = copy_workspace();
    let p = w.path().join("images/controller-bookworm.toml");
    let t = fs::read_to_string(&p).expect("read");
    fs::write(
        &p,
        t.replace("\"firstboot\"]", "\"firstboot\", \"nosuch\"]"),
    )
    .expect("write");
    expect_invalid(
        w.path(),
        "images/controller-bookworm.toml",
        &["nosuch", "layers["],
    );
    fs::write(
        &p,
        t.replace("suite = \"bookworm\"", "suite = \"buster-ish\""),
    )
    .expect("write");
    expect_invalid(
        w.path(),
        "images/controller-bookworm.toml",
        &["`suite`", "buster-ish"],
    );
    expect_invalid(w.path(), "images/nosuch.toml", &["images/nosuch.toml"]);
}

#[test]
fn build_without_root_is_exit_2() {
    let w = copy_workspace();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_nib"))
        .args([
            "build",
            "images/controller-bookworm.toml",
            "--cache",
            "/nonexistent/c",
            "--out",
            "/nonexistent/o",
        ])
        .current_dir(w.path())
        .output()
        .expect("setpriv");
    let s = text(&o);
    assert_eq!(o.status.code(), Some(2), "{s}");
    assert!(s.contains("root"), "{s}");
}

#[test]
fn inspect_of_a_non_build_is_exit_2() {
    let t = tempfile::tempdir().expect("tempdir");
    let o = nib(&["inspect", "."], t.path(), &t.path().join("c"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("manifest.json"));
}

/// `make probe` reads suite, mirror and keyring with
/// builder/definition-fields.py, eval'd by the shell as the Makefile does:
/// from `nib plan --json` when the binary is newer than its sources (as
/// this test's is), else from python3's tomllib; both must agree with nib.
#[test]
fn probe_fields_are_nib_plans_with_or_without_a_built_nib() {
    let root = workspace_root();
    let cache = tempfile::tempdir().expect("tempdir");
    let fields = |def: &Path, nib: Option<&str>| -> (Output, Vec<String>) {
        let o = Command::new("bash")
            .arg("-c")
            .arg(
                r#"f=$(/usr/bin/python3 builder/definition-fields.py "$@") || exit $?
                eval "$f"; printf '%s\n' "$suite" "$mirror" "$keyring" "$reader""#,
            )
            .arg("probe")
            .arg(def)
            .args(nib)
            .current_dir(&root)
            .output()
            .expect("bash");
        let lines = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(String::from)
            .collect();
        (o, lines)
    };
    for image in ["controller", "controller-bookworm"] {
        let def = root.join(format!("images/{image}.toml"));
        let o = nib(
            &["plan", def.to_str().expect("utf-8 path"), "--json"],
            &root,
            cache.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let want: Vec<String> = ["suite", "mirror", "keyring"]
            .iter()
            .map(|k| {
                v[k].as_str()
                    .unwrap_or_else(|| panic!("plan --json: no {k}"))
                    .to_string()
            })
            .collect();
        for (nib_bin, reader) in [(Some(env!("CARGO_BIN_EXE_nib")), "nib"), (None, "tomllib")] {
            let (o, got) = fields(&def, nib_bin);
            assert!(o.status.success(), "{}", text(&o));
            assert_eq!(got[..3], want[..], "{image} via {reader}: {}", text(&o));
            assert_eq!(got[3], reader, "{image}: {}", text(&o));
        }
    }
    // an invalid definition: nib's message and exit code 2
    let w = copy_workspace();
    let def = w.path().join("images/controller-bookworm.toml");
    let mut s = fs::read_to_string(&def).expect("read");
    s.push_str("surprise = 1\n");
    fs::write(&def, s).expect("write");
    let (o, _) = fields(&def, Some(env!("CARGO_BIN_EXE_nib")));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("surprise"), "{}", text(&o));
}
