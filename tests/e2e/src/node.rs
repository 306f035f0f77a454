//! One controller node: its netns, overlay root, host cgroup and (while it
//! runs) the systemd-nspawn container booted on them. Dropping a node kills
//! its container by PID and removes its cgroup, mount and namespace.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use nib_host::cmd::wait_deadline;
use nib_host::{Cmd, Output};

use crate::net::Netns;
use crate::overlay::Overlay;

/// Where systemd keeps its process tracking, as seen by this process:
/// (hierarchy mount point + our own cgroup path).
fn own_cgroup_bases() -> Result<Vec<PathBuf>> {
    let own = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    // mountinfo: "id parent maj:min root mountpoint opts … - fstype source superopts"
    let mount_of = |want_fs: &str, want_opt: Option<&str>| {
        info.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut post = post.split_whitespace();
            let fstype = post.next()?;
            let superopts = post.nth(1).unwrap_or_default();
            let ok = fstype == want_fs
                && want_opt.map_or(true, |o| superopts.split(',').any(|s| s == o));
            ok.then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
    };
    let mut bases = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mnt = if id == "0" && ctrl.is_empty() {
            mount_of("cgroup2", None)
        } else if ctrl == "name=systemd" {
            mount_of("cgroup", Some("name=systemd"))
        } else {
            None
        };
        if let Some(m) = mnt {
            bases.push(m.join(path.trim_start_matches('/')));
        }
    }
    if bases.is_empty() {
        bail!(
            "no cgroup2 or name=systemd hierarchy mounted; systemd-nspawn cannot boot a node here"
        );
    }
    Ok(bases)
}

/// Every PID in a cgroup subtree.
pub fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(rd) = fs::read_dir(&d) {
            stack.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

/// rmdir a cgroup subtree bottom-up (cgroup dirs hold only pseudo files).
/// With `keep_top`, only the children go.
pub fn remove_cgroup_tree(dir: &Path, keep_top: bool) -> Result<()> {
    let mut dirs = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            stack.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        dirs.push(d);
    }
    if keep_top {
        dirs.remove(0);
    }
    // Deepest first: children were pushed after their parents.
    for d in dirs.iter().rev() {
        match fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing cgroup {}", d.display())),
        }
    }
    Ok(())
}

fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// The container's init: the child of nspawn whose PID in its own
/// namespace is 1.
fn find_pid1(nspawn: i32) -> Option<i32> {
    let want = nspawn.to_string();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        (status_field(pid, "PPid")? == want).then_some(())?;
        let nspid = status_field(pid, "NSpid")?;
        (nspid.split_whitespace().last()? == "1" && nspid.split_whitespace().count() > 1)
            .then_some(pid)
    })
}

fn alive(pid: i32) -> bool {
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

#[derive(Debug)]
struct Container {
    nspawn: Child,
    pid1: i32,
}

#[derive(Debug)]
pub struct Node {
    pub name: String,
    /// Cluster address (no prefix), e.g. 198.18.0.11.
    pub address: String,
    container: Option<Container>,
    /// The running container's PID 1, 0 while down: shared with samplers
    /// that enter the node while it is killed and booted again.
    pid1_now: Arc<AtomicI32>,
    cgroups: Vec<PathBuf>,
    console_log: PathBuf,
    // Dropped after the container is gone (Drop below), in this order.
    overlay: Overlay,
    netns: Netns,
}

impl Node {
    /// Create the node's namespace, overlay and cgroup (not booted yet).
    pub fn create(
        run_id: &str,
        name: &str,
        address: &str,
        lower: &Path,
        dir: &Path,
        log_dir: &Path,
    ) -> Result<Self> {
        let netns = Netns::create(&format!("{run_id}-{name}"))?;
        let overlay = Overlay::mount(lower, dir)?;
        let mut cgroups = Vec::new();
        for base in own_cgroup_bases()? {
            let d = base.join(format!("{run_id}-{name}"));
            fs::create_dir_all(&d).with_context(|| format!("creating cgroup {}", d.display()))?;
            cgroups.push(d);
        }
        Ok(Node {
            name: name.to_string(),
            address: address.to_string(),
            container: None,
            pid1_now: Arc::new(AtomicI32::new(0)),
            cgroups,
            console_log: log_dir.join(format!("{name}.console.log")),
            overlay,
            netns,
        })
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The merged root (write seeds here before boot).
    pub fn root(&self) -> &Path {
        self.overlay.root()
    }

    pub fn running(&self) -> bool {
        self.container.is_some()
    }

    pub fn pid1(&self) -> Option<i32> {
        self.container.as_ref().map(|c| c.pid1)
    }

    /// The PID 1 of whatever boot of this node is running (0: none), as it
    /// changes.
    pub fn pid1_handle(&self) -> Arc<AtomicI32> {
        self.pid1_now.clone()
    }

    /// A fresh root for a stopped node: everything it wrote is gone, the
    /// image's root is back (a replaced disk). The seed must be placed again.
    pub fn reset_root(&mut self) -> Result<()> {
        if self.container.is_some() {
            bail!(
                "{} is running: stop it before replacing its root",
                self.name
            );
        }
        crate::log(&format!("{}: root replaced by the image's", self.name));
        self.overlay.reset()
    }

    /// Boot the container (firstboot/doc/HA.md, "The nspawn test pair"). nspawn first
    /// moves into the node's own cgroup: with `--keep-unit` it splits the
    /// cgroup it runs in, and two nodes sharing one would share their
    /// services' cgroups, so stopping a unit on one could kill the other's.
    pub fn boot(&mut self) -> Result<()> {
        if self.container.is_some() {
            bail!("{} is already running", self.name);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.console_log)
            .with_context(|| format!("opening {}", self.console_log.display()))?;
        let log2 = log
            .try_clone()
            .with_context(|| format!("opening {}", self.console_log.display()))?;
        let mut script = String::new();
        for d in &self.cgroups {
            script.push_str(&format!("echo $$ > '{}/cgroup.procs' && ", d.display()));
        }
        script.push_str("exec \"$@\"");
        let c = Cmd::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg("systemd-nspawn")
            .arg("--boot")
            .arg("-D")
            .arg(self.overlay.root())
            .args(["-M", &self.name])
            .arg(format!("--hostname={}", self.name))
            .arg(format!(
                "--network-namespace-path={}",
                self.netns.path().display()
            ))
            .args([
                "--register=no",
                "--keep-unit",
                "--capability=CAP_NET_ADMIN",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
                "--console=pipe",
                // What systemd gives PID 1 on a real machine; otherwise the
                // container inherits the caller's hard limits and cannot
                // raise them (memcached -c 65535 needs 65535 open files,
                // corosync locks its memory). nspawn can only raise them
                // where it holds CAP_SYS_RESOURCE (not in every sandbox:
                // see checks::MemcachedLimits).
                "--rlimit=RLIMIT_NOFILE=1024:524288",
                "--rlimit=RLIMIT_MEMLOCK=infinity",
            ])
            .stdout(log)
            .stderr(log2);
        crate::log(&format!("boot {}", self.name));
        let mut nspawn = c
            .spawn()
            .with_context(|| format!("starting systemd-nspawn for {}", self.name))?;
        let npid = i32::try_from(nspawn.id()).context("nspawn pid out of range")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid1 = loop {
            if let Some(p) = find_pid1(npid) {
                break p;
            }
            if let Some(st) = nspawn.try_wait().context("waiting for systemd-nspawn")? {
                bail!(
                    "systemd-nspawn for {} exited ({st}) before the container started; console: {}",
                    self.name,
                    self.console_tail(15)
                );
            }
            if Instant::now() >= deadline {
                let _ = nspawn.kill();
                let _ = nspawn.wait();
                bail!(
                    "{}: no container init under systemd-nspawn (pid {npid}) after 30 s; console: {}",
                    self.name,
                    self.console_tail(15)
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.container = Some(Container { nspawn, pid1 });
        self.pid1_now.store(pid1, Ordering::SeqCst);
        Ok(())
    }

    pub fn console_tail(&self, n: usize) -> String {
        crate::tail(
            &fs::read_to_string(&self.console_log).unwrap_or_default(),
            n,
        )
    }

    /// Power off hard: SIGKILL the container's PID 1 (which takes its whole
    /// PID namespace with it), reap nspawn, wait for the cgroup to empty.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut c) = self.container.take() else {
            return Ok(());
        };
        self.pid1_now.store(0, Ordering::SeqCst);
        crate::log(&format!("kill {} (pid 1 = {})", self.name, c.pid1));
        match kill(Pid::from_raw(c.pid1), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => bail!("killing {} pid {}: {e}", self.name, c.pid1),
        }
        if wait_deadline(&mut c.nspawn, Duration::from_secs(20))?.is_none() {
            crate::log(&format!(
                "teardown: nspawn of {} still up; killing it",
                self.name
            ));
            let _ = c.nspawn.kill();
            let _ = c.nspawn.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left: Vec<i32> = self
                .cgroups
                .iter()
                .flat_map(|d| cgroup_pids(d))
                .filter(|p| alive(*p))
                .collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                bail!("{}: processes {left:?} survive in its cgroup", self.name);
            }
            for p in &left {
                let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(50));
        }
        for d in &self.cgroups {
            remove_cgroup_tree(d, true)?;
        }
        Ok(())
    }

    /// Run a command inside the node (all its namespaces), bounded by
    /// `timeout` both inside (coreutils `timeout`) and outside.
    pub fn exec_for(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        self.exec_input(args, None, timeout)
    }

    /// As [`Node::exec_for`], with `input` on stdin (SQL that holds a
    /// password never goes on a command line).
    pub fn exec_input(
        &self,
        args: &[&str],
        input: Option<&str>,
        timeout: Duration,
    ) -> Result<Output> {
        let Some(pid1) = self.pid1() else {
            bail!("{} is not running", self.name);
        };
        let secs = timeout.as_secs().max(1).to_string();
        let c = Cmd::new("nsenter")
            .args(["-t", &pid1.to_string(), "-a", "--"])
            .args(["timeout", "-k", "2", &secs])
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LC_ALL", "C.UTF-8")
            .env("HOME", "/root")
            .env("TERM", "dumb")
            .timeout(timeout + Duration::from_secs(5))
            .unlogged();
        let c = match input {
            Some(i) => c.input(i),
            None => c,
        };
        Ok(c.output_unchecked()?)
    }

    /// Run inside and require success; stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        self.exec_for(args, Duration::from_secs(60))?
            .into_stdout()
            .with_context(|| format!("on {}", self.name))
    }

    /// `sh -c SCRIPT` inside the node.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.exec(&["sh", "-c", script])
    }

    /// Save this boot's journal into `path` (diagnostics after a failure).
    pub fn save_journal(&self, path: &Path) -> Result<()> {
        let ran = self.exec_for(
            &["journalctl", "-b", "--no-pager", "-o", "short-monotonic"],
            Duration::from_secs(30),
        )?;
        let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut f, &ran.stdout)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Host-side PIDs this node still has (nspawn and everything in its
    /// cgroup); empty after [`Node::kill`].
    pub fn host_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.cgroups.iter().flat_map(|d| cgroup_pids(d)).collect();
        if let Some(c) = &self.container {
            pids.push(c.pid1);
            if let Ok(p) = i32::try_from(c.nspawn.id()) {
                pids.push(p);
            }
        }
        pids.retain(|p| alive(*p));
        pids
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            crate::log(&format!("teardown {}: {e:#}", self.name));
        }
        for d in &self.cgroups {
            if let Err(e) = remove_cgroup_tree(d, false) {
                crate::log(&format!("teardown {}: {e:#}", self.name));
            }
        }
        if let Err(e) = self.overlay.unmount() {
            crate::log(&format!("teardown {}: {e:#}", self.name));
        }
        // netns goes when the field drops.
    }
}
