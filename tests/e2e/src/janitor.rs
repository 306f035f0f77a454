//! Leftovers of runs that died without unwinding (SIGKILL, power loss):
//! everything this suite creates is named `nibe2e-<pid>-…`, so what belongs
//! to a PID that no longer runs can be found and removed. Also the
//! "nothing left behind" check of a finished run.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use nib_host::Cmd;

use crate::node::{cgroup_pids, remove_cgroup_tree};

pub const PREFIX: &str = "nibe2e-";

/// Where each run's overlays and seeds live (one temp dir per run).
pub fn run_base() -> PathBuf {
    std::env::var_os("NIB_E2E_RUNDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/nib-e2e-run"))
}

/// `nibe2e-<pid>-…` → pid
fn owner(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn stale(name: &str) -> bool {
    owner(name).is_some_and(|p| p != std::process::id() as i32 && !pid_alive(p))
}

/// Things named for run `id_prefix` (e.g. `nibe2e-123-`) that still exist.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub netns: Vec<String>,
    pub mounts: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    pub pids: Vec<i32>,
    pub dirs: Vec<PathBuf>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty()
            && self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.pids.is_empty()
            && self.dirs.is_empty()
    }
}

fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter(|l| l.contains(" - cgroup2 ") || l.contains(" - cgroup "))
        .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
        .collect()
}

/// Cgroup dirs named with `matches` anywhere below the systemd hierarchies
/// (two levels deep is where the suite makes them).
fn cgroup_dirs(matches: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for m in cgroup_mounts() {
        let mut stack = vec![(m, 0)];
        while let Some((d, depth)) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if matches(&name) {
                    found.push(e.path());
                } else if depth < 4 {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    found
}

/// Find what carries the names `matches` accepts.
pub fn find(matches: &dyn Fn(&str) -> bool) -> Leftovers {
    let mut l = Leftovers::default();
    if let Ok(rd) = fs::read_dir("/run/netns") {
        l.netns = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| matches(n))
            .collect();
    }
    if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
        l.mounts = info
            .lines()
            .filter_map(|line| line.split_whitespace().nth(4))
            .filter(|mp| mp.split('/').any(matches))
            .map(PathBuf::from)
            .collect();
    }
    l.cgroups = cgroup_dirs(matches);
    l.pids = l
        .cgroups
        .iter()
        .flat_map(|d| cgroup_pids(d))
        .filter(|p| pid_alive(*p))
        .collect();
    if let Ok(rd) = fs::read_dir(run_base()) {
        l.dirs = rd
            .flatten()
            .filter(|e| matches(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
    }
    l
}

/// What run `run_id` left behind (should be nothing after teardown).
pub fn leftovers_of(run_id: &str) -> Leftovers {
    let pre = format!("{run_id}-");
    find(&|n: &str| n == run_id || n.starts_with(&pre))
}

/// Remove everything left by suite runs whose process is gone.
pub fn sweep_stale() -> Result<()> {
    let l = find(&stale);
    if l.is_empty() {
        return Ok(());
    }
    crate::log(&format!("removing leftovers of dead runs: {l:?}"));
    for p in &l.pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Deepest mounts first.
    let mut mounts = l.mounts.clone();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &mounts {
        if umount2(m, MntFlags::empty()).is_err() {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
    }
    for c in &l.cgroups {
        remove_cgroup_tree(c, false).with_context(|| format!("removing {}", c.display()))?;
    }
    for n in &l.netns {
        Cmd::new("ip").args(["netns", "del", n]).run()?;
    }
    for d in &l.dirs {
        fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_from_names() {
        assert_eq!(owner("nibe2e-123-controller01"), Some(123));
        assert_eq!(owner("nibe2e-77-sw"), Some(77));
        assert_eq!(owner("nibe2e-x-sw"), None);
        assert_eq!(owner("other-123"), None);
    }

    #[test]
    fn own_and_live_runs_are_not_stale() {
        let me = format!("{PREFIX}{}-sw", std::process::id());
        assert!(!stale(&me));
        assert!(!stale("nibe2e-1-sw"), "pid 1 is alive");
        assert!(!stale("unrelated"));
    }
}
