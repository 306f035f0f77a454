//! nib's end-to-end suite: two controller nodes booted from the built image
//! with systemd-nspawn in network namespaces, seeded with `nib seed`, checked
//! on their real services, then failed over.
//!
//! The test that boots the pair is `#[ignore]`d: `make e2e` runs it. Needs
//! root, systemd-nspawn, iproute2, the mariadb client and libmemcached-tools
//! on the host.

pub mod amqp;
pub mod bmc;
pub mod checker;
pub mod checks;
pub mod cluster;
pub mod faults;
pub mod janitor;
pub mod nemesis;
pub mod net;
pub mod node;
pub mod overlay;
pub mod pair;
pub mod parse;
pub mod rootfs;
pub mod sampler;
pub mod scenario;
pub mod summary;
pub mod wait;
pub mod writer;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// Progress line on stderr, stamped with seconds since the suite started.
pub fn log(msg: &str) {
    eprintln!("[e2e {:7.2}s] {msg}", t0().elapsed().as_secs_f64());
}

/// The commands the suite runs (nib_host's `exec: …` lines) are logged as
/// its own lines, on its clock.
pub fn init_log() {
    nib_host::log::set_sink(log);
    // no command of the suite may hang it (a poll sets a shorter one)
    nib_host::cmd::set_default_timeout(std::time::Duration::from_secs(300));
    let _ = t0();
}

/// The last `n` non-empty lines of `s`, joined with " | " (one-line errors).
pub fn tail(s: &str, n: usize) -> String {
    nib_host::cmd::tail_lines(s, n).replace('\n', " | ")
}

/// Seconds since the host booted (`/proc/uptime`, 10 ms resolution): the
/// clock of the nodes' `journalctl -o short-monotonic` lines (containers
/// share the host's kernel), so a logged kill or start lines up with them.
pub fn host_uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The workspace root (this crate lives in `tests/e2e`).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(here)
}

/// Cargo's target dir (for the `nib` binary and the run logs).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}
