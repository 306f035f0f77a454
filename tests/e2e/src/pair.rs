//! The two-node pair on one switch, plus the quorum arbiter (by default)
//! and a client namespace. Everything is torn down when the `Pair` drops
//! (also on panic): nodes first, then the arbiter (containers killed by
//! PID, cgroups removed, overlays unmounted, netns deleted), then the
//! simulated BMCs of an IPMI-fenced pair (ipmi_sim stopped by PID, then
//! their namespaces), then the client and switch namespaces, then the
//! run's temp dir.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::bmc::{self, Bmc, Power};
use crate::checks;
use crate::cluster::{self, Fencing, Setup, ARBITER, CLIENT, NODES, PREFIX};
use crate::janitor::{self, Leftovers};
use crate::net::{Netns, Switch};
use crate::node::Node;
use crate::rootfs;

#[derive(Debug, Clone)]
pub struct Options {
    /// The image's rootfs tarball (`.tar` or `.tar.zst`).
    pub rootfs: PathBuf,
    /// The arbiter image's rootfs tarball (used when `setup.arbiter`).
    pub arbiter_rootfs: PathBuf,
    /// With or without the arbiter, which fencing.
    pub setup: Setup,
    /// Where unpacked roots are kept, keyed by digest.
    pub cache: PathBuf,
    /// Make and place `nib seed` seeds (off only for a bare-harness run on
    /// a rootfs without nib-firstboot).
    pub seeds: bool,
    /// Console logs and, after a failure, journals.
    pub log_dir: PathBuf,
    /// `NIB_E2E_PREPARE`: a program run as `PROG ROOT NODE` on each node's
    /// root before boot (development on a rootfs that is not the image).
    pub prepare: Option<PathBuf>,
}

impl Options {
    /// From the environment: `NIB_E2E_ROOTFS` (default
    /// out/controller-bookworm/rootfs.tar.zst), `NIB_E2E_ARBITER_ROOTFS`
    /// (default arbiter-bookworm/rootfs.tar.zst beside the controller's
    /// image directory), `NIB_E2E_ARBITER=off` (the pair alone, `two_node`),
    /// `NIB_E2E_CACHE` (default /var/tmp/nib-e2e-cache),
    /// `NIB_E2E_UPTO=boot` (no seeds).
    pub fn from_env(label: &str) -> Self {
        let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
        let rootfs = env("NIB_E2E_ROOTFS").unwrap_or_else(|| {
            crate::workspace_root().join("out/controller-bookworm/rootfs.tar.zst")
        });
        let arbiter_rootfs =
            env("NIB_E2E_ARBITER_ROOTFS").unwrap_or_else(|| arbiter_rootfs_beside(&rootfs));
        let setup = match std::env::var("NIB_E2E_ARBITER").as_deref() {
            Ok("off") | Ok("0") | Ok("no") => Setup::TWO_NODE_NO_FENCING,
            _ => Setup::ARBITER,
        };
        Options {
            rootfs,
            arbiter_rootfs,
            setup,
            cache: env("NIB_E2E_CACHE").unwrap_or_else(|| PathBuf::from("/var/tmp/nib-e2e-cache")),
            seeds: upto() != Upto::Boot,
            log_dir: crate::target_dir().join("nib-e2e").join(label),
            prepare: env("NIB_E2E_PREPARE"),
        }
    }
}

/// `…/out/controller-bookworm/rootfs.tar.zst` →
/// `…/out/arbiter-bookworm/rootfs.tar.zst` (same file name, the sibling
/// image directory).
pub fn arbiter_rootfs_beside(rootfs: &Path) -> PathBuf {
    let file = rootfs
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("rootfs.tar.zst"));
    let out = rootfs
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("."));
    out.join("arbiter-bookworm").join(file)
}

/// How far a run goes (`NIB_E2E_UPTO`): `boot` (harness only: boot, reach,
/// tear down), `cluster` (all checks but failover), or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Upto {
    Boot,
    Cluster,
    All,
}

pub fn upto() -> Upto {
    match std::env::var("NIB_E2E_UPTO").as_deref() {
        Ok("boot") => Upto::Boot,
        Ok("cluster") => Upto::Cluster,
        _ => Upto::All,
    }
}

/// The client namespace's port on the switch.
pub const CLIENT_PORT: &str = "vc";
/// The arbiter's port on the switch.
pub const ARBITER_PORT: &str = "va";

/// The switch port of the `i`th node (0-based): `v1`, `v2`.
pub fn node_port(i: usize) -> String {
    format!("v{}", i + 1)
}

pub struct Pair {
    /// The two controllers (always two: the checks and the checker rely on it).
    pub nodes: Vec<Node>,
    /// The quorum arbiter, when the setup has one (torn down after the
    /// controllers).
    pub arbiter: Option<Node>,
    /// With IPMI fencing: each controller's simulated BMC, in node order
    /// (stopped by PID on drop, before their namespaces go).
    pub bmcs: Vec<Bmc>,
    bmc_netns: Vec<Netns>,
    pub setup: Setup,
    pub client: Netns,
    switch: Switch,
    pub run_id: String,
    pub log_dir: PathBuf,
    pub cluster_toml: Option<PathBuf>,
    /// `[cluster] name` of the seeded pair (qnetd lists it by that).
    pub cluster_name: Option<String>,
    /// `NIB_E2E_PREPARE`, run again on a replaced root.
    prepare: Option<PathBuf>,
    /// Set by [`Pair::boot`]: the moment before the first node was started.
    pub started: Option<Instant>,
    /// [`crate::host_uptime`] at that moment (to read the journals by).
    pub started_uptime: f64,
    run_dir: TempDir,
}

impl Pair {
    /// Namespaces, overlays and seeds for both nodes; nothing booted yet.
    /// `round` keeps several pairs of one process apart (bench).
    pub fn create(opts: &Options, round: u32) -> Result<Self> {
        crate::init_log();
        janitor::sweep_stale().context("cleaning up after earlier runs")?;
        let with_arbiter = opts.setup.arbiter;
        let mut srcs = vec![opts.rootfs.as_path()];
        if with_arbiter {
            srcs.push(opts.arbiter_rootfs.as_path());
        }
        let lowers = rootfs::prepare_all(&srcs, &opts.cache)?;
        let lower = lowers[0].clone();
        let run_id = format!("{}{}-r{round}", janitor::PREFIX, std::process::id());
        let base = janitor::run_base();
        fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let run_dir = tempfile::Builder::new()
            .prefix(&format!("{run_id}-"))
            .tempdir_in(&base)
            .with_context(|| format!("creating a run dir in {}", base.display()))?;
        if opts.log_dir.exists() {
            fs::remove_dir_all(&opts.log_dir)
                .with_context(|| format!("clearing {}", opts.log_dir.display()))?;
        }
        fs::create_dir_all(&opts.log_dir)
            .with_context(|| format!("creating {}", opts.log_dir.display()))?;

        let switch = Switch::create(&format!("{run_id}-sw"))?;
        let client = Netns::create(&format!("{run_id}-client"))?;
        switch.plug(&client, CLIENT_PORT, Some(&format!("{CLIENT}/{PREFIX}")))?;
        let mut pair = Pair {
            nodes: Vec::new(),
            arbiter: None,
            bmcs: Vec::new(),
            bmc_netns: Vec::new(),
            setup: opts.setup,
            client,
            switch,
            run_id: run_id.clone(),
            log_dir: opts.log_dir.clone(),
            cluster_toml: None,
            cluster_name: None,
            prepare: opts.prepare.clone(),
            started: None,
            started_uptime: f64::NAN,
            run_dir,
        };
        for (i, (name, addr)) in NODES.iter().enumerate() {
            let dir = pair.run_dir.path().join(name);
            let node = Node::create(&run_id, name, addr, &lower, &dir, &opts.log_dir)?;
            pair.nodes.push(node);
            // A seeded node configures eth0 itself (systemd-networkd from
            // the role data's [network]), as on hardware: an address set
            // from outside first makes networkd fail the link ("Failed to
            // configure address: Numerical result out of range") and
            // network-online.target, which corosync waits for, only comes
            // at wait-online's 2-minute timeout.
            let cidr = format!("{addr}/{PREFIX}");
            pair.switch.plug(
                pair.nodes[i].netns(),
                &node_port(i),
                (!opts.seeds).then_some(cidr.as_str()),
            )?;
        }
        if with_arbiter {
            let (name, addr) = ARBITER;
            let dir = pair.run_dir.path().join(name);
            let node = Node::create(&run_id, name, addr, &lowers[1], &dir, &opts.log_dir)?;
            let cidr = format!("{addr}/{PREFIX}");
            pair.switch.plug(
                node.netns(),
                ARBITER_PORT,
                (!opts.seeds).then_some(cidr.as_str()),
            )?;
            pair.arbiter = Some(node);
        }
        if opts.seeds {
            let nib = cluster::nib_bin()?;
            let toml = cluster::init(&nib, pair.run_dir.path(), opts.setup)?;
            for n in pair.nodes.iter().chain(pair.arbiter.iter()) {
                cluster::place_seed(&nib, &toml, &n.name, pair.run_dir.path(), n.root())?;
            }
            pair.cluster_name = Some(cluster::cluster_name(&toml)?);
            pair.cluster_toml = Some(toml);
        }
        if opts.setup.fencing == Fencing::Ipmi {
            pair.start_bmcs()?;
        }
        let memcached = checks::MemcachedLimits::for_host(checks::host_nofile_hard()?);
        if memcached.lowered {
            crate::log(&format!(
                "this host's hard RLIMIT_NOFILE is {}, below memcached's -c {}: the harness runs it with -c {} and \
                 LimitNOFILE={} (drop-in zz-nib-e2e.conf in each node's root; the image keeps -c {})",
                memcached.nofile,
                checks::IMAGE_MAXCONNS,
                memcached.maxconns,
                memcached.nofile,
                checks::IMAGE_MAXCONNS
            ));
        }
        for n in &pair.nodes {
            checks::fit_memcached(n.root(), &memcached)?;
        }
        if let Some(script) = &opts.prepare {
            for n in pair.nodes.iter().chain(pair.arbiter.iter()) {
                nib_host::Cmd::new(script)
                    .arg(n.root())
                    .arg(&n.name)
                    .run()
                    .with_context(|| format!("NIB_E2E_PREPARE for {}", n.name))?;
            }
        }
        Ok(pair)
    }

    pub fn dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// One simulated BMC per controller, each in its own namespace on the
    /// switch (port `vbN`, [`bmc::address`]), with the password that
    /// [`cluster::init`] put in the fencing devices.
    fn start_bmcs(&mut self) -> Result<()> {
        let password = self.run_dir.path().join(cluster::BMC_PASSWORD_FILE);
        for i in 0..self.nodes.len() {
            let ns = Netns::create(&format!("{}-bmc{}", self.run_id, i + 1))?;
            let addr = bmc::address(i);
            self.switch.plug(
                &ns,
                &format!("vb{}", i + 1),
                Some(&format!("{addr}/{PREFIX}")),
            )?;
            let b = Bmc::start(ns.name(), &addr, cluster::BMC_USER, &password)
                .with_context(|| format!("the BMC of {}", self.nodes[i].name))?;
            crate::log(&format!(
                "BMC of {} at {addr} (ipmi_sim pid {})",
                self.nodes[i].name,
                b.pid()
            ));
            self.bmc_netns.push(ns);
            self.bmcs.push(b);
        }
        Ok(())
    }

    /// Make each BMC's power-off really cut its node's power, as
    /// [`Node::kill`] does: the link down and SIGKILL to the PID 1 of the
    /// boot running now (call again after a node is booted). The harness
    /// reaps the container afterwards ([`Node::kill`] on a dead PID 1).
    pub fn arm_bmcs(&self) -> Result<()> {
        for (n, b) in self.nodes.iter().zip(&self.bmcs) {
            let Some(pid) = n.pid1() else {
                b.set_power_hook(Power::Off, None)?;
                continue;
            };
            let script = format!(
                "ip -n {} link set eth0 down; kill -KILL {pid}",
                n.netns().name()
            );
            b.set_power_hook(Power::Off, Some(&["sh", "-c", &script]))?;
        }
        Ok(())
    }

    /// Start the arbiter (first: its qnetd is what both qdevices dial)
    /// and both nodes, back to back.
    pub fn boot(&mut self) -> Result<()> {
        self.started = Some(Instant::now());
        self.started_uptime = crate::host_uptime();
        if let Some(a) = &mut self.arbiter {
            a.boot()?;
        }
        for n in &mut self.nodes {
            n.boot()?;
        }
        Ok(())
    }

    /// The arbiter; an error on a pair set up without one.
    pub fn arbiter(&self) -> Result<&Node> {
        self.arbiter
            .as_ref()
            .context("this pair runs without the arbiter")
    }

    pub fn arbiter_mut(&mut self) -> Result<&mut Node> {
        self.arbiter
            .as_mut()
            .context("this pair runs without the arbiter")
    }

    /// Every container of the run: both controllers and the arbiter.
    pub fn all_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().chain(self.arbiter.iter())
    }

    /// Replace a stopped controller's root with the image's (a new disk)
    /// and seed it again from the same cluster.toml: an empty node.
    pub fn replace_root(&mut self, name: &str) -> Result<()> {
        let opts_prepare = self.prepare.clone();
        let toml = self
            .cluster_toml
            .clone()
            .context("pair has no cluster.toml")?;
        let nib = cluster::nib_bin()?;
        let work = self.run_dir.path().join(format!("reseed-{name}"));
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let memcached = checks::MemcachedLimits::for_host(checks::host_nofile_hard()?);
        let n = self.node_mut(name)?;
        n.reset_root()?;
        cluster::place_seed(&nib, &toml, name, &work, n.root())?;
        checks::fit_memcached(n.root(), &memcached)?;
        if let Some(script) = &opts_prepare {
            nib_host::Cmd::new(script)
                .arg(n.root())
                .arg(name)
                .run()
                .with_context(|| format!("NIB_E2E_PREPARE for {name}"))?;
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> Result<&Node> {
        match self.nodes.iter().find(|n| n.name == name) {
            Some(n) => Ok(n),
            None => bail!("no node {name}"),
        }
    }

    pub fn node_mut(&mut self, name: &str) -> Result<&mut Node> {
        match self.nodes.iter_mut().find(|n| n.name == name) {
            Some(n) => Ok(n),
            None => bail!("no node {name}"),
        }
    }

    /// The switch's namespace (bridge `br0`).
    pub fn switch_netns(&self) -> &Netns {
        self.switch.netns()
    }

    /// The switch port (`v1`, `v2`, the veth in the switch netns) that
    /// `name`'s eth0 is plugged into; the client's is [`CLIENT_PORT`], the
    /// arbiter's [`ARBITER_PORT`].
    pub fn port_of(&self, name: &str) -> Result<String> {
        if self.arbiter.as_ref().is_some_and(|a| a.name == name) {
            return Ok(ARBITER_PORT.to_string());
        }
        match self.nodes.iter().position(|n| n.name == name) {
            Some(i) => Ok(node_port(i)),
            None => bail!("no node {name}"),
        }
    }

    /// The other node of the pair.
    pub fn peer(&self, name: &str) -> Result<&Node> {
        match self.nodes.iter().find(|n| n.name != name) {
            Some(n) => Ok(n),
            None => bail!("no peer of {name}"),
        }
    }

    /// Names of the nodes whose eth0 carries the VIP (host view of each
    /// node's netns; a dead node keeps its address there: no fencing).
    pub fn vip_holders(&self) -> Result<Vec<String>> {
        let want = format!("{}/{PREFIX}", cluster::VIP);
        let mut holders = Vec::new();
        for n in &self.nodes {
            if n.netns().addrs("eth0")?.contains(&want) {
                holders.push(n.name.clone());
            }
        }
        Ok(holders)
    }

    /// Journals and pacemaker's view of each running node into the log dir.
    pub fn save_diagnostics(&self) {
        if let Some(a) = self.arbiter.as_ref().filter(|a| a.running()) {
            let j = self.log_dir.join(format!("{}.journal.txt", a.name));
            if let Err(e) = a.save_journal(&j) {
                crate::log(&format!("diagnostics: {e:#}"));
            }
            let mut text = String::new();
            for args in [
                &["corosync-qnetd-tool", "-l", "-v"][..],
                &["corosync-qnetd-tool", "-s"][..],
                &["systemctl", "--failed", "--no-pager"][..],
            ] {
                if let Ok(r) = a.exec_for(args, std::time::Duration::from_secs(20)) {
                    text.push_str(&format!(
                        "$ {}\n{}{}\n",
                        args.join(" "),
                        r.stdout_str(),
                        r.stderr_str()
                    ));
                }
            }
            let _ = fs::write(self.log_dir.join(format!("{}.state.txt", a.name)), text);
        }
        for n in self.nodes.iter().filter(|n| n.running()) {
            let j = self.log_dir.join(format!("{}.journal.txt", n.name));
            if let Err(e) = n.save_journal(&j) {
                crate::log(&format!("diagnostics: {e:#}"));
            }
            // Each tool's view plus the logs that say why a service did
            // not start; one file per node.
            let mut text = String::new();
            for args in [
                &["crm_mon", "-1", "-A", "-f"][..],
                &["nib-firstboot", "status"][..],
                &["corosync-quorumtool", "-s"][..],
                &["corosync-qdevice-tool", "-s", "-v"][..],
                &["systemctl", "--failed", "--no-pager"][..],
                &[
                    "sh",
                    "-c",
                    "tail -n 60 /var/lib/mysql/*.err /var/log/mysql/error.log",
                ][..],
                &["sh", "-c", "tail -n 60 /var/log/rabbitmq/*.log"][..],
                &["tail", "-n", "200", "/var/log/pacemaker/pacemaker.log"][..],
            ] {
                if let Ok(r) = n.exec_for(args, std::time::Duration::from_secs(20)) {
                    text.push_str(&format!(
                        "$ {}\n{}{}\n",
                        args.join(" "),
                        r.stdout_str(),
                        r.stderr_str()
                    ));
                }
            }
            let _ = fs::write(self.log_dir.join(format!("{}.state.txt", n.name)), text);
        }
        crate::log(&format!(
            "diagnostics (console logs, journals, cluster state, service logs) in {}",
            self.log_dir.display()
        ));
    }

    /// Every node's journal (also a killed node's: it is persistent, read
    /// from its root on the host) and the service logs that are not in it
    /// (pacemaker's detail log, RabbitMQ's, MariaDB's), whole, for timing
    /// analysis (`make bench-e2e` keeps them per round).
    pub fn save_logs(&self) {
        for n in self.all_nodes() {
            let journal_dir = n.root().join("var/log/journal");
            let c = nib_host::Cmd::new("journalctl")
                .arg(format!("--directory={}", journal_dir.display()))
                .args(["--no-pager", "-o", "short-monotonic"])
                .timeout(std::time::Duration::from_secs(30));
            match c.output_unchecked() {
                Ok(r) => {
                    let _ = fs::write(
                        self.log_dir.join(format!("{}.journal.txt", n.name)),
                        r.stdout,
                    );
                }
                Err(e) => crate::log(&format!("journal of {}: {e:#}", n.name)),
            }
            let mut files = vec![
                n.root().join("var/log/pacemaker/pacemaker.log"),
                n.root().join("var/lib/mysql/mariadb.err"),
            ];
            if let Ok(dir) = fs::read_dir(n.root().join("var/log/rabbitmq")) {
                files.extend(dir.flatten().map(|e| e.path()));
            }
            for f in files {
                if let Some(base) = f.file_name().and_then(|b| b.to_str()) {
                    let _ = fs::copy(&f, self.log_dir.join(format!("{}.{base}", n.name)));
                }
            }
        }
    }

    /// `systemd-analyze blame` and `critical-chain` of each running node
    /// into the log dir: where boot time goes, for tuning.
    pub fn save_boot_profile(&self) {
        for n in self.nodes.iter().filter(|n| n.running()) {
            let mut text = String::new();
            for args in [
                &["systemd-analyze", "blame", "--no-pager"][..],
                &[
                    "systemd-analyze",
                    "critical-chain",
                    "--no-pager",
                    "multi-user.target",
                ][..],
            ] {
                if let Ok(r) = n.exec_for(args, std::time::Duration::from_secs(20)) {
                    text.push_str(&format!(
                        "$ {}\n{}{}\n",
                        args.join(" "),
                        r.stdout_str(),
                        r.stderr_str()
                    ));
                }
            }
            let _ = fs::write(
                self.log_dir.join(format!("{}.boot-profile.txt", n.name)),
                text,
            );
        }
    }

    /// Tear everything down and report what (if anything) is left.
    pub fn teardown(self) -> Leftovers {
        let run_id = self.run_id.clone();
        drop(self);
        janitor::leftovers_of(&run_id)
    }
}
