//! `apply` end to end on a temp root: crash safety (SIGKILL at every step
//! and at random times, then rerun → byte-identical to a clean run),
//! instance-id semantics, dry-run, and that no secret ever reaches output.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// xorshift64*: test randomness without a crate; the seed is printed so a
/// failure can be replayed with NIB_TEST_SEED.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("NIB_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        eprintln!("NIB_TEST_SEED={seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("cp");
    assert!(st.success());
}

/// A snapshot where the freshly generated host keys count by name and mode
/// only (their bytes are random by design); the pair must still match.
fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut s = snapshot(root, &|_| false);
    for (k, v) in s.iter_mut() {
        if k.starts_with("etc/ssh/ssh_host_") {
            if let Entry::File { content, .. } = v {
                assert!(!content.is_empty(), "{k} is empty");
                content.clear();
            }
        }
    }
    s
}

fn apply_cmd(root: &Path, seed: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(["apply", "--quiet", "--root"])
        .arg(root)
        .arg("--seed")
        .arg(seed);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// `nib-firstboot ARGS… --root ROOT`, run to completion.
fn on_root(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .expect("run")
}

fn check_key_pair(root: &Path) {
    let key = root.join("etc/ssh/ssh_host_ed25519_key");
    let out = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&key)
        .output()
        .expect("ssh-keygen -y");
    assert!(out.status.success(), "{} unreadable", key.display());
    let pubkey =
        std::fs::read_to_string(root.join("etc/ssh/ssh_host_ed25519_key.pub")).expect("pub");
    let derived = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        pubkey.split_whitespace().nth(1),
        derived.split_whitespace().nth(1),
        "host key pair does not match"
    );
}

#[test]
fn sigkill_at_every_step_and_random_times_then_rerun_converges() {
    // Base root: rsa and ecdsa host keys already there (slow to make), so
    // each run generates only ed25519 and the key steps are still crossed.
    let base = fake_root();
    std::fs::create_dir_all(base.path().join("etc/ssh")).expect("mkdir");
    for t in ["rsa", "ecdsa"] {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", t, "-N", "", "-f"])
            .arg(base.path().join(format!("etc/ssh/ssh_host_{t}_key")))
            .stdin(Stdio::null())
            .status()
            .expect("ssh-keygen");
        assert!(st.success());
    }
    let seed = example_seed("controller02", Some("iid-crash"));

    let clean = tempfile::tempdir().expect("tmp");
    copy_tree(base.path(), clean.path());
    let t0 = Instant::now();
    let out = apply_cmd(clean.path(), seed.path()).output().expect("run");
    let clean_time = t0.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    check_key_pair(clean.path());
    let want = tree(clean.path());

    let mut rng = Rng::new();
    let mut killed_points = 0;
    let mut k = 1u64;
    loop {
        let root = tempfile::tempdir().expect("tmp");
        copy_tree(base.path(), root.path());
        let out = apply_cmd(root.path(), seed.path())
            .env("NIB_FIRSTBOOT_FAILPOINT", k.to_string())
            .output()
            .expect("run");
        if out.status.success() {
            break; // k is past the last step
        }
        assert_eq!(
            out.status.signal(),
            Some(9),
            "step {k}: expected SIGKILL\n{}",
            text(&out)
        );
        killed_points += 1;
        // every third point: crash a second time, later, before the rerun
        if k % 3 == 0 {
            let k2 = 1 + rng.below(k + 20);
            let out = apply_cmd(root.path(), seed.path())
                .env("NIB_FIRSTBOOT_FAILPOINT", k2.to_string())
                .output()
                .expect("run");
            assert!(
                out.status.success() || out.status.signal() == Some(9),
                "{}",
                text(&out)
            );
        }
        let out = apply_cmd(root.path(), seed.path()).output().expect("rerun");
        assert!(
            out.status.success(),
            "rerun after kill at step {k}: {}",
            text(&out)
        );
        check_key_pair(root.path());
        if let Some(d) = diff(&want, &tree(root.path())) {
            panic!("after SIGKILL at step {k} and a rerun, the tree differs from a clean run: {d}");
        }
        k += 1;
        assert!(k < 1000, "failpoints never end");
    }
    eprintln!("killed at {killed_points} step boundaries; clean run {clean_time:?}");

    // Random times: SIGKILL from outside after a random delay.
    let span = clean_time.as_micros() as u64 + 1;
    let mut random_kills = 0;
    for _ in 0..30 {
        let root = tempfile::tempdir().expect("tmp");
        copy_tree(base.path(), root.path());
        // its own process group, killed as a whole like systemd kills a
        // unit's cgroup (an orphaned ssh-keygen would race the rerun)
        let mut cmd = apply_cmd(root.path(), seed.path());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("spawn");
        std::thread::sleep(Duration::from_micros(rng.below(span)));
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let st = child.wait().expect("wait");
        if st.signal() == Some(9) {
            random_kills += 1;
        }
        let out = apply_cmd(root.path(), seed.path()).output().expect("rerun");
        assert!(
            out.status.success(),
            "rerun after a random kill: {}",
            text(&out)
        );
        if let Some(d) = diff(&want, &tree(root.path())) {
            panic!("after a random SIGKILL and a rerun, the tree differs from a clean run: {d}");
        }
    }
    eprintln!("random-time kills that landed: {random_kills}/30");
    assert!(
        killed_points + random_kills >= 50,
        "only {killed_points} + {random_kills} kill points"
    );
}

#[test]
fn same_instance_id_changes_nothing_new_one_reapplies() {
    let root = fake_root();
    let seed = example_seed("controller01", Some("iid-one"));
    let out = apply(root.path(), seed.path(), &["--no-host-keys"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("applied instance-id iid-one"),
        "{}",
        text(&out)
    );

    let before = stamps(root.path());
    let snap = snapshot(root.path(), &|_| false);
    let out = apply(root.path(), seed.path(), &["--no-host-keys"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("nothing to do: instance-id iid-one is already applied"),
        "{}",
        text(&out)
    );
    // the example accepts a split brain: every boot's journal says so,
    // also when there is nothing to apply
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: SPLIT BRAIN ACCEPTED"),
        "{}",
        text(&out)
    );
    assert_eq!(before, stamps(root.path()), "second apply touched files");
    assert_eq!(diff(&snap, &snapshot(root.path(), &|_| false)), None);

    // Same role data, new instance-id: re-applied; only nib's own records change.
    let seed2 = example_seed("controller01", Some("iid-two"));
    let out = apply(root.path(), seed2.path(), &["--no-host-keys"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("applied instance-id iid-two"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("var/lib/nib/instance-id")).expect("iid"),
        "iid-two\n"
    );
    let after = stamps(root.path());
    let changed: Vec<_> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v) && !root.path().join(k.as_str()).is_dir())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        changed,
        vec!["var/lib/nib/firstboot.json", "var/lib/nib/instance-id"]
    );

    // New instance-id with a new cookie: the cookie is rewritten.
    let mut spec = example();
    spec.secrets.erlang_cookie = nib_firstboot::role::Secret::new("NewCookieNewCookie0123456789");
    let s =
        nib_firstboot::seed::seed_files(&spec, "controller01", Some("iid-three")).expect("seed");
    let seed3 = seed_dir(&s.meta_data, &s.user_data, s.network_config.as_deref());
    let out = apply(root.path(), seed3.path(), &["--no-host-keys"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(root.path().join("var/lib/rabbitmq/.erlang.cookie")).expect("cookie"),
        b"NewCookieNewCookie0123456789"
    );
}

#[test]
fn dry_run_lists_changes_masks_secrets_and_writes_nothing() {
    let root = fake_root();
    let seed = example_seed("controller01", Some("iid-a"));
    let out = apply(root.path(), seed.path(), &["--no-host-keys"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut spec = example();
    spec.secrets.erlang_cookie = nib_firstboot::role::Secret::new("DryRunCookieDryRunCookie42");
    spec.node[0].address = "198.18.0.21".into();
    let s = nib_firstboot::seed::seed_files(&spec, "controller01", Some("iid-b")).expect("seed");
    let seed2 = seed_dir(&s.meta_data, &s.user_data, s.network_config.as_deref());
    let before = snapshot(root.path(), &|_| false);
    let stamps_before = stamps(root.path());
    let out = apply(root.path(), seed2.path(), &["--no-host-keys", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("/var/lib/rabbitmq/.erlang.cookie (content"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(content holds secrets: not shown)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+198.18.0.21\tcontroller01"),
        "hosts diff missing:\n{stdout}"
    );
    assert!(
        !stdout.contains("/etc/hostname"),
        "unchanged file listed:\n{stdout}"
    );
    assert!(!stdout.contains("DryRunCookie"), "secret in dry-run output");
    assert_eq!(diff(&before, &snapshot(root.path(), &|_| false)), None);
    assert_eq!(stamps_before, stamps(root.path()));
}

/// Every secret value and recognisable pieces of it.
fn secret_needles(spec: &nib_firstboot::role::ClusterSpec) -> Vec<String> {
    let mut v = Vec::new();
    for s in spec.secrets.values() {
        v.push(s.to_string());
        let core = s.trim_start_matches("base64:");
        if core.len() > 24 {
            // any 16-char window of a long value
            for i in (0..core.len() - 16).step_by(8) {
                v.push(core[i..i + 16].to_string());
            }
        }
    }
    for d in &spec.fencing.device {
        v.push(d.password.expose().to_string());
    }
    v.push("918273645546372819".to_string());
    v
}

fn assert_no_secret(what: &str, out: &std::process::Output, needles: &[String]) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for n in needles {
        assert!(
            !all.contains(n.as_str()),
            "{what}: output contains a secret value\n{all}"
        );
    }
}

#[test]
fn no_secret_in_any_output_or_error() {
    let mut spec = example();
    spec.fencing.mode = Some(nib_firstboot::role::FencingMode::Ipmi);
    for n in ["controller01", "controller02"] {
        spec.fencing.device.push(nib_firstboot::role::FenceDevice {
            node: n.into(),
            address: "198.18.0.250".into(),
            username: "admin".into(),
            password: nib_firstboot::role::Secret::new("IpmiSecretPassw0rd"),
            cipher: None,
        });
    }
    spec.validate().expect("ipmi variant valid");
    let needles = secret_needles(&spec);
    let s = nib_firstboot::seed::seed_files(&spec, "controller01", Some("iid-leak")).expect("seed");
    let seed = seed_dir(&s.meta_data, &s.user_data, s.network_config.as_deref());
    let root = fake_root();
    // apply, its rerun, a dry run, validate
    assert_no_secret(
        "dry-run",
        &apply(root.path(), seed.path(), &["--dry-run", "--no-host-keys"]),
        &needles,
    );
    let out = apply(root.path(), seed.path(), &["--no-host-keys"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret("apply", &out, &needles);
    assert_no_secret(
        "rerun",
        &apply(root.path(), seed.path(), &["--no-host-keys"]),
        &needles,
    );
    let out = Command::new(bin())
        .args(["validate", "--seed"])
        .arg(seed.path())
        .output()
        .expect("validate");
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret("validate", &out, &needles);

    // Errors: secrets in the wrong place, wrong type or beside a mistake.
    let cookie = spec.secrets.erlang_cookie.expose().to_string();
    let pw = spec
        .secrets
        .mariadb_replication_password
        .expose()
        .to_string();
    let toml = spec.to_toml();
    let yaml = s.user_data.clone();
    let bad_inputs = vec![
        (
            "toml unknown key holding a secret",
            toml.replace("erlang_cookie =", "erlang_cookiee ="),
        ),
        (
            "toml secret as a number's value",
            toml.replace("id = 2", &format!("id = \"{cookie}\"")),
        ),
        (
            "toml syntax error on a secret line",
            toml.replace(&format!("\"{cookie}\""), &format!("\"{cookie}")),
        ),
        (
            "toml all-digit secret left unquoted",
            toml.replace(&format!("\"{pw}\""), "918273645546372819"),
        ),
        (
            "toml secret too short to be valid",
            toml.replace(&pw, &pw[..8]),
        ),
        (
            "toml secret with a bad char",
            toml.replace(&pw, &format!("{pw}'")),
        ),
        (
            "yaml secret as a number",
            yaml.replace("id: 2", &format!("id: {cookie}")),
        ),
        (
            "yaml unknown key holding a secret",
            yaml.replace("erlang_cookie:", "erlang_cookiee:"),
        ),
        (
            "yaml secret in a list",
            yaml.replace(
                &format!("erlang_cookie: {cookie}"),
                &format!("erlang_cookie: [{cookie}]"),
            ),
        ),
        (
            "yaml broken quoting",
            yaml.replace(
                &format!("erlang_cookie: {cookie}"),
                &format!("erlang_cookie: \"{cookie}"),
            ),
        ),
    ];
    let mut n_bad = 0;
    for (what, user) in bad_inputs {
        assert_ne!(user, toml, "{what}: replacement did nothing");
        assert_ne!(user, yaml, "{what}: replacement did nothing");
        let sd = seed_dir(
            "instance-id: iid-bad\nlocal-hostname: controller01\n",
            &user,
            None,
        );
        let out = apply(root.path(), sd.path(), &["--no-host-keys"]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        assert_no_secret(what, &out, &needles);
        n_bad += 1;
    }
    // and every invalid fixture (built from the example's secrets)
    let ex_needles = secret_needles(&example());
    for f in std::fs::read_dir(fixtures().join("invalid")).expect("dir") {
        let p = f.expect("e").path();
        let user = std::fs::read_to_string(&p).expect("read");
        let sd = seed_dir(
            "instance-id: iid-bad\nlocal-hostname: controller01\n",
            &user,
            None,
        );
        assert_no_secret(
            &p.display().to_string(),
            &apply(root.path(), sd.path(), &[]),
            &ex_needles,
        );
        n_bad += 1;
    }
    assert!(n_bad > 40);
}

#[test]
fn seed_found_in_the_roots_seed_dir_and_a_removed_seed_keeps_the_node() {
    let root = fake_root();
    // no seed anywhere on a fresh root: invalid input, nothing written
    let before = snapshot(root.path(), &|_| false);
    let out = on_root(root.path(), &["apply", "--no-host-keys"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no NoCloud seed found"),
        "{}",
        text(&out)
    );
    assert_eq!(diff(&before, &snapshot(root.path(), &|_| false)), None);

    // cloud-init's seed directory inside the root (nocloud-net is searched too)
    let s =
        nib_firstboot::seed::seed_files(&example(), "controller02", Some("iid-dir")).expect("seed");
    let dir = root.path().join("var/lib/cloud/seed/nocloud-net");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("meta-data"), &s.meta_data).expect("w");
    std::fs::write(dir.join("user-data"), &s.user_data).expect("w");
    let out = on_root(root.path(), &["apply", "--no-host-keys"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/hostname")).expect("hostname"),
        "controller02\n"
    );

    // the seed is gone later: the configured node keeps its configuration
    std::fs::remove_dir_all(root.path().join("var/lib/cloud")).expect("rm");
    let before = stamps(root.path());
    let out = on_root(root.path(), &["apply", "--no-host-keys"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("keeping the applied instance-id iid-dir"),
        "{}",
        text(&out)
    );
    let after = stamps(root.path());
    assert!(
        before.iter().all(|(k, v)| after.get(k) == Some(v)),
        "files changed"
    );
}

/// The steps nib-firstboot.service leaves to its own units: `host-keys`
/// makes exactly the keys `apply` would (named after the applied node) and
/// nothing on a second run; `datadir` refuses a root first boot has not
/// configured (exit 1, naming the file), leaves a non-empty datadir alone.
#[test]
fn host_keys_and_datadir_commands_run_after_apply() {
    let root = fake_root();
    let seed = example_seed("controller01", Some("iid-split"));

    // Before apply: no configuration for the datadir, and it says so.
    let out = on_root(root.path(), &["datadir"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("var/lib/nib/instance-id"),
        "{}",
        text(&out)
    );

    let out = apply(root.path(), seed.path(), &["--no-host-keys"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!root.path().join("etc/ssh/ssh_host_ed25519_key").exists());

    let host_keys = || on_root(root.path(), &["host-keys"]);
    let out = host_keys();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("host keys: 3 generated"),
        "{}",
        text(&out)
    );
    check_key_pair(root.path());
    let pubkey =
        std::fs::read_to_string(root.path().join("etc/ssh/ssh_host_rsa_key.pub")).expect("rsa pub");
    assert!(pubkey.trim_end().ends_with("root@controller01"), "{pubkey}");
    let snap = snapshot(root.path(), &|_| false);
    let out = host_keys();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("host keys: 0 generated"),
        "{}",
        text(&out)
    );
    assert_eq!(diff(&snap, &snapshot(root.path(), &|_| false)), None);

    // A datadir with anything in it is never re-initialised.
    let datadir = root.path().join("var/lib/mysql");
    std::fs::create_dir_all(&datadir).expect("mkdir");
    std::fs::write(datadir.join("ibdata1"), b"x").expect("w");
    let out = on_root(root.path(), &["datadir"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is initialised"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(datadir.join("ibdata1")).expect("r"), b"x");
}
