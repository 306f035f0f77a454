//! Log lines go to stderr (the journal on a node). Quiet mode is for
//! benchmarks only; errors are always printed by `main`.

use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

pub fn info(msg: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        eprintln!("nib-firstboot: {msg}");
    }
}

pub fn warn(msg: &str) {
    eprintln!("nib-firstboot: warning: {msg}");
}
