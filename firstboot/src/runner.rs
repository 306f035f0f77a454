//! The one way to run an external program: log `exec: …`, stdin from
//! /dev/null, capture output, and on failure name the command with the tail
//! of its stderr. Never pass a secret as an argument: arguments are logged.

use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result};

/// How many bytes of stderr go into an error.
const STDERR_TAIL: usize = 2000;

/// The command line as logged.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Run to completion; success or an error with the command and its stderr tail.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    crate::log::info(&format!("exec: {line}"));
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {line}"))?;
    checked(&line, out)
}

/// Like [`run`], with `input` on stdin: how a secret reaches a tool
/// (cibadmin --xml-pipe) without appearing in its arguments.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<Output> {
    use std::io::Write as _;
    let line = describe(cmd);
    crate::log::info(&format!("exec: {line}"));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {line}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .with_context(|| format!("writing to the stdin of {line}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("running {line}"))?;
    checked(&line, out)
}

/// A non-zero exit becomes an error naming the command, with its stderr tail.
fn checked(line: &str, out: Output) -> Result<Output> {
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail = tail(err.trim_end(), STDERR_TAIL);
        anyhow::bail!("{line}: {}\n{tail}", out.status);
    }
    Ok(out)
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_and_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).expect_err("fails");
        let msg = format!("{err:#}");
        assert!(msg.contains("sh -c 'echo boom >&2; exit 3'"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn stdin_is_null() {
        let out = run(&mut Command::new("cat")).expect("cat");
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("abc", 2), "bc");
    }
}
