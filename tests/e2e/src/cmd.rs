//! The one way this suite runs programs: stdin null, output captured, a hard
//! deadline, and an error that names the command and the tail of its stderr.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What a finished command left behind.
#[derive(Debug)]
pub struct Ran {
    pub desc: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// The stdout of a successful run, or an error with the stderr tail.
    pub fn into_stdout(self) -> Result<String> {
        if self.status.success() {
            Ok(self.stdout)
        } else {
            bail!("{}", self.failure())
        }
    }

    /// One line saying how the command failed, for error messages.
    pub fn failure(&self) -> String {
        let err = tail(&self.stderr, 12);
        let out = tail(&self.stdout, 6);
        let mut msg = format!("`{}` failed ({})", self.desc, self.status);
        if !err.is_empty() {
            msg.push_str(&format!("; stderr: {err}"));
        }
        if !out.is_empty() {
            msg.push_str(&format!("; stdout: {out}"));
        }
        msg
    }
}

/// The last `n` non-empty lines of `s`, joined with " | ".
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join(" | ")
}

/// The command line as it would be typed (program and arguments).
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn reader<R: Read + Send + 'static>(src: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = src {
            // A read error only truncates what we show; the exit status decides.
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Run `cmd` to completion or kill it after `timeout`. A non-zero exit is
/// not an error here (see [`Ran::into_stdout`]); failing to start or the
/// deadline passing is.
pub fn run_for(cmd: &mut Command, timeout: Duration) -> Result<Ran> {
    let desc = describe(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting `{desc}`"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let status = match wait_deadline(&mut child, timeout)? {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{desc}` did not finish within {timeout:?} and was killed");
        }
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ok(Ran {
        desc,
        status,
        stdout,
        stderr,
    })
}

/// Run and require success; logs the command first. For actions (not polls).
pub fn run(cmd: &mut Command) -> Result<String> {
    crate::log(&format!("exec: {}", describe(cmd)));
    run_for(cmd, Duration::from_secs(300))?.into_stdout()
}

/// Wait for `child` until `timeout`; `None` when it is still running.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().context("waiting for a child process")? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_non_empty_lines() {
        assert_eq!(tail("a\n\nb\nc\n\n", 2), "b | c");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn run_for_reports_failure_with_stderr() -> Result<()> {
        let ran = run_for(
            Command::new("sh").args(["-c", "echo out; echo boom >&2; exit 3"]),
            Duration::from_secs(10),
        )?;
        assert!(!ran.ok());
        let msg = ran.failure();
        assert!(msg.contains("boom"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        Ok(())
    }

    #[test]
    fn run_for_kills_at_deadline() {
        let started = Instant::now();
        let res = run_for(Command::new("sleep").arg("30"), Duration::from_millis(200));
        assert!(res.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
