//! The pair's role data for a run: `nib cluster init` makes fresh secrets
//! (and, with the arbiter, the qnetd CA and certificates), the suite pins
//! what this machine needs (fencing per [`Setup`]; a static /24 without
//! gateway), and `nib seed` makes each node's seed (the arbiter's too).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use nib_host::Cmd;

/// The example pair (tests/fixtures/cluster.toml; its schema:
/// builder/doc/DESIGN.md, "Role data").
pub const NODES: [(&str, &str); 2] = [
    ("controller01", "198.18.0.11"),
    ("controller02", "198.18.0.12"),
];
pub const VIP: &str = "198.18.0.10";
pub const PREFIX: u8 = 24;
/// Test client (writer, AMQP probe): on the switch, not a cluster member.
pub const CLIENT: &str = "198.18.0.100";
/// The quorum arbiter (corosync-qnetd), the pair's third vote.
pub const ARBITER: (&str, &str) = ("arbiter01", "198.18.0.13");

/// How the pair decides a split: what a run (a fault plan) is set up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// [`ARBITER`] booted beside the pair and named in the role data
    /// (`nib cluster init --arbiter`): corosync-qdevice on both controllers.
    /// Without it the pair runs corosync `two_node`, which the role data
    /// must accept explicitly (`accept_split_brain = true`).
    pub arbiter: bool,
    pub fencing: Fencing,
}

/// The role data's `[fencing]` for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fencing {
    /// `mode = "none"`.
    None,
    /// `mode = "ipmi"`: one `[[fencing.device]]` per node, its BMC a
    /// simulated one ([`crate::bmc`]) at [`crate::bmc::address`] that the
    /// pair starts, user [`BMC_USER`], the password in [`BMC_PASSWORD_FILE`]
    /// beside the cluster file, cipher suite 3 (ipmi_sim does not answer
    /// "Get Channel Cipher Suites").
    Ipmi,
}

/// The simulated BMCs' administrator.
pub const BMC_USER: &str = "admin";
/// Beside cluster.toml: the BMCs' password (0600), what [`init`] wrote into
/// the fencing devices.
pub const BMC_PASSWORD_FILE: &str = "bmc-password";

impl Setup {
    /// The default of `make e2e` and `make e2e-faults`.
    pub const ARBITER: Setup = Setup {
        arbiter: true,
        fencing: Fencing::None,
    };
    /// corosync `two_node` with IPMI fencing (issue 17's scenario c).
    pub const TWO_NODE_IPMI: Setup = Setup {
        arbiter: false,
        fencing: Fencing::Ipmi,
    };
    /// corosync `two_node`, fencing off: the pair of main 9a47df0.
    pub const TWO_NODE_NO_FENCING: Setup = Setup {
        arbiter: false,
        fencing: Fencing::None,
    };
}

/// The `nib` binary: `NIB_BIN`, else target/release/nib, else target/debug/nib.
pub fn nib_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NIB_BIN") {
        return Ok(PathBuf::from(p));
    }
    let t = crate::target_dir();
    for p in [t.join("release/nib"), t.join("debug/nib")] {
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no nib binary in {}/{{release,debug}}: run `cargo build --release -p nib` (make e2e does) or set NIB_BIN",
        t.display()
    )
}

/// Write `dir/cluster.toml` for this run: fresh secrets from `nib cluster
/// init` (with `--arbiter` when the setup has one), then the setup's
/// fencing and the test network pinned.
pub fn init(nib: &Path, dir: &Path, setup: Setup) -> Result<PathBuf> {
    let path = dir.join("cluster.toml");
    let mut c = Cmd::new(nib).args(["cluster", "init", "--out"]).arg(&path);
    for (name, addr) in NODES {
        c = c.arg("--node").arg(format!("{name}={addr}"));
    }
    if setup.arbiter {
        c = c
            .arg("--arbiter")
            .arg(format!("{}={}", ARBITER.0, ARBITER.1));
    }
    c.args(["--vip", &format!("{VIP}/{PREFIX}"), "--interface", "eth0"])
        .run()
        .context("nib cluster init")?;
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {} written by nib cluster init", path.display()))?;
    let mut fencing = toml::Table::new();
    match setup.fencing {
        Fencing::None => {
            fencing.insert("mode".into(), "none".into());
            if !setup.arbiter {
                // Without a third vote and without fencing a split loses
                // acknowledged writes; nib refuses that unless told (issue 17).
                fencing.insert("accept_split_brain".into(), true.into());
            }
        }
        Fencing::Ipmi => {
            fencing.insert("mode".into(), "ipmi".into());
            let password = bmc_password(dir)?;
            let devices: Vec<toml::Value> = NODES
                .iter()
                .enumerate()
                .map(|(i, (name, _))| {
                    let mut d = toml::Table::new();
                    d.insert("node".into(), (*name).into());
                    d.insert("address".into(), crate::bmc::address(i).into());
                    d.insert("username".into(), BMC_USER.into());
                    d.insert("password".into(), password.clone().into());
                    d.insert("cipher".into(), 3.into());
                    d.into()
                })
                .collect();
            fencing.insert("device".into(), devices.into());
        }
    }
    doc.insert("fencing".into(), fencing.into());
    let mut network = toml::Table::new();
    network.insert("interface".into(), "eth0".into());
    network.insert("prefix".into(), i64::from(PREFIX).into());
    doc.insert("network".into(), network.into());
    let out = toml::to_string(&doc).context("serialising cluster.toml")?;
    fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A fresh BMC password (16 hex digits from the kernel's random source),
/// written to `dir/`[`BMC_PASSWORD_FILE`] (0600) for [`crate::bmc::Bmc::start`].
fn bmc_password(dir: &Path) -> Result<String> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut raw = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("reading /dev/urandom")?;
    let password = hex::encode(raw);
    let path = dir.join(BMC_PASSWORD_FILE);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{password}").with_context(|| format!("writing {}", path.display()))?;
    Ok(password)
}

/// `[cluster] name` of a cluster.toml (qnetd lists the pair by it).
pub fn cluster_name(cluster: &Path) -> Result<String> {
    let text =
        fs::read_to_string(cluster).with_context(|| format!("reading {}", cluster.display()))?;
    let doc: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", cluster.display()))?;
    doc.get("cluster")
        .and_then(|c| c.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .with_context(|| format!("{}: no [cluster] name", cluster.display()))
}

/// Make `node`'s seed with `nib seed --format dir` and put it where the
/// NoCloud datasource looks: `/var/lib/cloud/seed/nocloud/` of its root.
pub fn place_seed(nib: &Path, cluster: &Path, node: &str, work: &Path, root: &Path) -> Result<()> {
    let seed = work.join(format!("seed-{node}"));
    Cmd::new(nib)
        .arg("seed")
        .arg(cluster)
        .args(["--node", node, "--format", "dir", "--out"])
        .arg(&seed)
        .run()
        .with_context(|| format!("nib seed for {node}"))?;
    let dest = root.join("var/lib/cloud/seed/nocloud");
    fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut n = 0;
    for e in fs::read_dir(&seed).with_context(|| format!("reading {}", seed.display()))? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let to = dest.join(e.file_name());
        fs::copy(e.path(), &to).with_context(|| format!("copying seed to {}", to.display()))?;
        n += 1;
    }
    if !dest.join("meta-data").is_file() || !dest.join("user-data").is_file() {
        bail!(
            "nib seed --format dir for {node} made no meta-data/user-data in {} ({n} files)",
            seed.display()
        );
    }
    Ok(())
}
