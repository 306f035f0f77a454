//! Log lines go to stderr (the journal on a node), as `PROGRAM: message`.
//! A program may hand its lines to a sink of its own instead (the e2e suite
//! stamps them with its clock). Quiet mode is for benchmarks only; errors
//! are always printed by `main`.
//!
//! The commands [`crate::cmd`] runs are logged here too, as `exec: <the
//! command line, quoted so it can be pasted into a shell>`; a program that
//! keeps its own output terse (the builder's progress lines) turns those
//! off with [`set_exec_lines`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static QUIET: AtomicBool = AtomicBool::new(false);
static EXEC_LINES: AtomicBool = AtomicBool::new(true);
static PROGRAM: OnceLock<&'static str> = OnceLock::new();
static SINK: OnceLock<fn(&str)> = OnceLock::new();

pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// Whether each command run is logged (on unless a program turns it off).
pub fn set_exec_lines(on: bool) {
    EXEC_LINES.store(on, Ordering::Relaxed);
}

/// The prefix of log lines (`nib-firstboot` unless a caller such as `nib`
/// sets its own name first).
pub fn set_program(name: &'static str) {
    let _ = PROGRAM.set(name);
}

/// Where info lines go instead of stderr (first call wins).
pub fn set_sink(sink: fn(&str)) {
    let _ = SINK.set(sink);
}

fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("nib-firstboot")
}

pub fn info(msg: &str) {
    if QUIET.load(Ordering::Relaxed) {
        return;
    }
    match SINK.get() {
        Some(sink) => sink(msg),
        None => eprintln!("{}: {msg}", program()),
    }
}

pub fn warn(msg: &str) {
    match SINK.get() {
        Some(sink) => sink(&format!("warning: {msg}")),
        None => eprintln!("{}: warning: {msg}", program()),
    }
}

/// `exec: LINE`, when exec lines are on.
pub(crate) fn exec(line: &str) {
    if EXEC_LINES.load(Ordering::Relaxed) {
        info(&format!("exec: {line}"));
    }
}
