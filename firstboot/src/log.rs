//! Log lines go to stderr (the journal on a node). Quiet mode is for
//! benchmarks only; errors are always printed by `main`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static QUIET: AtomicBool = AtomicBool::new(false);
static PROGRAM: OnceLock<&'static str> = OnceLock::new();

pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// The prefix of log lines (`nib-firstboot` unless a caller such as `nib`
/// sets its own name first).
pub fn set_program(name: &'static str) {
    let _ = PROGRAM.set(name);
}

fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("nib-firstboot")
}

pub fn info(msg: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        eprintln!("{}: {msg}", program());
    }
}

pub fn warn(msg: &str) {
    eprintln!("{}: warning: {msg}", program());
}
