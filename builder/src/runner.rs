//! The one way nib runs external programs (mmdebstrap, apt-get in a chroot,
//! curl, gpgv, …): stdin is null, output is captured, and a failure names the
//! command and carries the tail of what it printed.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// `s` as one POSIX shell word (for the shell hooks given to mmdebstrap,
/// and for showing a command).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A command about to run. Children are tied to nib's life with
/// `setpriv --pdeathsig KILL`, so an interrupted build leaves no dpkg running
/// behind it in the build's mount namespace.
pub struct Run {
    cmd: Command,
    shown: String,
}

impl Run {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig").arg("KILL").arg("--").arg(program);
        cmd.stdin(Stdio::null());
        Run {
            cmd,
            shown: program.to_string_lossy().into_owned(),
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        let a = a.as_ref();
        self.shown.push(' ');
        self.shown.push_str(&a.to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    /// A clean environment for chroots: nothing of the caller's leaks into the
    /// image (locale, proxies, TMPDIR, …).
    pub fn env_clear(mut self) -> Self {
        self.cmd.env_clear();
        self.cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        self
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Run to completion; stdout as a string.
    pub fn output(self) -> Result<String> {
        self.output_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Run to completion; stdout as bytes.
    pub fn output_bytes(mut self) -> Result<Vec<u8>> {
        if std::env::var_os("NIB_DEBUG").is_some() {
            eprintln!("exec: {}", self.shown);
        }
        let out = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("starting {}", self.shown))?;
        if !out.status.success() {
            let mut tail = tail_lines(&String::from_utf8_lossy(&out.stdout), 15);
            let err_tail = tail_lines(&String::from_utf8_lossy(&out.stderr), 25);
            if !err_tail.is_empty() {
                if !tail.is_empty() {
                    tail.push('\n');
                }
                tail.push_str(&err_tail);
            }
            bail!("{} failed ({}):\n{}", short(&self.shown), out.status, tail);
        }
        Ok(out.stdout)
    }

    pub fn run(self) -> Result<()> {
        self.output().map(|_| ())
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 400 {
        format!("{}…", s.chars().take(400).collect::<String>())
    } else {
        s.to_string()
    }
}

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_quote_survives_the_shell() {
        for s in ["plain", "it's", "a b", "$HOME `x` \"q\"", ""] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh_quote(s)))
                .output()
                .expect("sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    #[test]
    fn failure_names_command_and_stderr() {
        let err = Run::new("sh")
            .arg("-c")
            .arg("echo boom >&2; exit 3")
            .run()
            .expect_err("must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("sh -c") && msg.contains("boom"), "{msg}");
    }

    #[test]
    fn output_is_returned() {
        let out = Run::new("echo").arg("hi").output().expect("echo");
        assert_eq!(out, "hi\n");
    }
}
