//! Every file under tests/fixtures/invalid/ is role data with one mistake.
//! `apply` must exit 2 with a message naming the key (the fixture's
//! `# expect:` line) and leave the target root byte-for-byte unchanged —
//! both a fresh root and one that an earlier seed already configured.

mod common;

use std::fs;

use common::*;

const DEFAULT_META: &str = "instance-id: iid-invalid\nlocal-hostname: controller01\n";

#[test]
fn every_invalid_fixture_exits_2_naming_the_key_and_changes_nothing() {
    let dir = fixtures().join("invalid");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("invalid fixtures")
        .map(|e| e.expect("e").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "need at least 30 invalid fixtures, have {}",
        files.len()
    );

    // A root already configured by the valid example (a re-provision attempt).
    let configured = fake_root();
    let good = example_seed("controller01", Some("iid-before"));
    let out = apply(configured.path(), good.path(), &["--no-host-keys"]);
    assert!(out.status.success(), "{}", text(&out));
    let fresh = fake_root();

    let mut failures = Vec::new();
    for f in &files {
        let content = fs::read_to_string(f).expect("read fixture");
        let expect = content
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", f.display()))
            .trim()
            .to_string();
        let meta = content
            .lines()
            .find_map(|l| l.strip_prefix("# meta-data: "))
            .map(|j| {
                serde_json::from_str::<String>(j).expect("meta-data directive is a JSON string")
            })
            .unwrap_or_else(|| DEFAULT_META.to_string());
        let seed = seed_dir(&meta, &content, None);
        for root in [configured.path(), fresh.path()] {
            let before = snapshot(root, &|_| false);
            let stamps_before = stamps(root);
            let out = apply(root, seed.path(), &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let name = f.file_name().expect("name").to_string_lossy();
            if out.status.code() != Some(2) {
                failures.push(format!("{name}: expected exit 2\n{}", text(&out)));
            } else if !stderr.contains(&format!("`{expect}`")) {
                failures.push(format!(
                    "{name}: message does not name `{expect}`\n{}",
                    text(&out)
                ));
            } else if !(stderr.contains("user-data") || stderr.contains("meta-data")) {
                failures.push(format!(
                    "{name}: message does not name the file\n{}",
                    text(&out)
                ));
            }
            if let Some(d) = diff(&before, &snapshot(root, &|_| false)) {
                failures.push(format!("{name}: the root changed: {d}"));
            }
            if stamps_before != stamps(root) {
                failures.push(format!(
                    "{name}: a file was rewritten (inode/mtime changed)"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
