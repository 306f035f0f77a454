//! Running the external tools the outputs need (mkfs.ext4, mkfs.fat, mtools,
//! mksquashfs, qemu-img…): log the command, stdin from /dev/null, stderr
//! captured and its tail put into the error.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// A command line as the user would type it, for logs and errors.
pub fn display(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

fn quote(a: &OsStr) -> String {
    let a = a.to_string_lossy();
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
    {
        a.into_owned()
    } else {
        crate::runner::sh_quote(&a)
    }
}

/// Run to completion; stdout is returned, a non-zero exit is an error naming
/// the command with the last lines of its stderr.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    run_both(cmd).map(|(out, _)| out)
}

/// As [`run`], returning stdout and stderr (for tools that report errors
/// on stderr but exit 0, like debugfs).
pub fn run_both(cmd: &mut Command) -> Result<(Vec<u8>, Vec<u8>)> {
    let shown = display(cmd);
    if std::env::var_os("NIB_LOG_EXEC").is_some() {
        eprintln!("exec: {shown}");
    }
    let started = std::time::Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting {shown}"))?;
    if std::env::var_os("NIB_LOG_EXEC").is_some() {
        eprintln!("exec: done in {:.1}s", started.elapsed().as_secs_f64());
    }
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            tail(&out.stderr, &out.stdout)
        );
    }
    Ok((out.stdout, out.stderr))
}

/// The last lines of stderr (or stdout when stderr is empty), for errors.
fn tail(stderr: &[u8], stdout: &[u8]) -> String {
    let text = if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        stderr
    } else {
        stdout
    };
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(8);
    lines[start..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_and_stderr() {
        let err =
            run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).expect_err("must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("sh -c 'echo boom >&2; exit 3'"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn stdout_is_returned() {
        let out = run(Command::new("sh").args(["-c", "printf ok"])).expect("runs");
        assert_eq!(out, b"ok");
    }
}
