//! The one way nib runs another program (mmdebstrap, apt-get in a chroot,
//! mkfs, corosync-keygen, cibadmin, ip, nsenter…):
//! - stdin is /dev/null unless input is given (how a secret reaches a tool:
//!   never as an argument, since arguments are logged and visible in `ps`);
//! - the child gets SIGKILL when the thread that started it dies
//!   (`PR_SET_PDEATHSIG`), so an interrupted build or test leaves nothing
//!   running behind it;
//! - it is logged once, as a shell-quoted command line that can be pasted
//!   back into a shell ([`crate::log`]); environment variables set for it
//!   are shown before it, secret ones as `NAME=<secret>`;
//! - the result is a typed [`Status`]; a failure is an [`Error`] naming the
//!   command, the status and the tail of its stderr (and stdout).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Lines of stderr (and of stdout) an error carries.
const STDERR_LINES: usize = 25;
const STDOUT_LINES: usize = 10;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
}

impl Status {
    pub fn success(self) -> bool {
        self == Status::Exited(0)
    }

    /// The exit code, when it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            Status::Exited(c) => Some(c),
            Status::Signaled(_) => None,
        }
    }
}

impl From<ExitStatus> for Status {
    fn from(s: ExitStatus) -> Status {
        match (s.code(), s.signal()) {
            (Some(c), _) => Status::Exited(c),
            (None, Some(sig)) => Status::Signaled(sig),
            (None, None) => Status::Exited(-1),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Exited(c) => write!(f, "exit status {c}"),
            Status::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command as logged.
    pub command: String,
    /// Keep stdout out of errors ([`Cmd::secret_stdout`]).
    pub secret_stdout: bool,
    pub status: Status,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout of a successful run as text, else [`Error::Failed`].
    pub fn into_stdout(self) -> Result<String, Error> {
        self.checked().map(|o| o.stdout_str())
    }

    /// How it failed, as an error message would say it ("" on success).
    pub fn failure(&self) -> String {
        match self.clone().checked() {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    /// `Ok(self)` when it exited 0, else [`Error::Failed`].
    pub fn checked(self) -> Result<Output, Error> {
        if self.status.success() {
            return Ok(self);
        }
        let stdout: &[u8] = if self.secret_stdout {
            b""
        } else {
            &self.stdout
        };
        Err(Error::Failed {
            tail: failure_tail(&self.stderr, stdout),
            command: short(&self.command),
            status: self.status,
            stdout: self.stdout,
            stderr: self.stderr,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting {command}: {source}")]
    Start {
        command: String,
        source: std::io::Error,
    },
    #[error("{command}: {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}){}", if .tail.is_empty() { String::new() } else { format!(":\n{}", .tail) })]
    Failed {
        command: String,
        status: Status,
        /// The last lines of stderr, then of stdout, for the message.
        tail: String,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    #[error("{command} did not finish within {timeout:?} and was killed")]
    Timeout { command: String, timeout: Duration },
}

impl Error {
    /// The status of a command that ran and failed.
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::Failed { status, .. } => Some(*status),
            _ => None,
        }
    }
}

static DEFAULT_TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// A deadline for every command of this process that sets none of its own
/// (the e2e suite: no command of a test may hang it). First call wins.
pub fn set_default_timeout(t: Duration) {
    let _ = DEFAULT_TIMEOUT.set(t);
}

fn default_timeout() -> Option<Duration> {
    DEFAULT_TIMEOUT.get().copied()
}

/// A command line for an error message: long ones (mmdebstrap with its
/// hook scripts) cut at 400 characters; the log line has it whole.
fn short(s: &str) -> String {
    if s.chars().count() > 400 {
        format!("{}…", s.chars().take(400).collect::<String>())
    } else {
        s.to_string()
    }
}

/// `s` as one POSIX shell word, quoted only when it needs to be.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%^".contains(c))
    {
        s.to_string()
    } else {
        sh_quote(s)
    }
}

/// `s` in single quotes, for a shell (hook scripts, logged commands).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn quote_os(s: &OsStr) -> String {
    quote(&s.to_string_lossy())
}

/// A command about to run.
pub struct Cmd {
    cmd: Command,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    cleared: bool,
    dir: Option<OsString>,
    input: Option<Vec<u8>>,
    timeout: Option<Duration>,
    logged: bool,
    secret_stdout: bool,
    stdin_piped: bool,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let program = program.as_ref().to_os_string();
        Cmd {
            cmd: Command::new(&program),
            program,
            args: Vec::new(),
            env: Vec::new(),
            cleared: false,
            dir: None,
            input: None,
            timeout: None,
            logged: true,
            secret_stdout: false,
            stdin_piped: false,
            stdout: None,
            stderr: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.cmd.arg(a.as_ref());
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// An environment variable, shown in the logged command line.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env(k.as_ref(), v.as_ref());
        self.env
            .push((k.as_ref().to_os_string(), Some(v.as_ref().to_os_string())));
        self
    }

    /// An environment variable whose value is a secret: logged as
    /// `NAME=<secret>`.
    pub fn secret_env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env(k.as_ref(), v.as_ref());
        self.env.push((k.as_ref().to_os_string(), None));
        self
    }

    /// A clean environment with a standard PATH: nothing of the caller's
    /// leaks in (locale, proxies, TMPDIR…; chroots in an image build).
    pub fn env_clear(mut self) -> Cmd {
        self.cmd.env_clear();
        self.cleared = true;
        self.env(OsStr::new("PATH"), "/usr/sbin:/usr/bin:/sbin:/bin")
    }

    pub fn current_dir(mut self, d: impl AsRef<Path>) -> Cmd {
        self.cmd.current_dir(d.as_ref());
        self.dir = Some(d.as_ref().as_os_str().to_os_string());
        self
    }

    /// Bytes for the command's stdin (never logged).
    pub fn input(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.input = Some(bytes.into());
        self
    }

    /// Killed, and an [`Error::Timeout`], when it runs longer.
    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = Some(t);
        self
    }

    /// Its stdout holds secrets (a seed's user-data read back): never put
    /// into an error, only stderr is.
    pub fn secret_stdout(mut self) -> Cmd {
        self.secret_stdout = true;
        self
    }

    /// For [`Cmd::spawn`]: stdin is a pipe the caller writes (and closes).
    pub fn stdin_piped(mut self) -> Cmd {
        self.stdin_piped = true;
        self
    }

    /// Not logged: for polls that run many times a second, whose failures
    /// are reported by the caller when it gives up.
    pub fn unlogged(mut self) -> Cmd {
        self.logged = false;
        self
    }

    /// For [`Cmd::spawn`]: where stdout goes (default: inherited).
    pub fn stdout(mut self, s: impl Into<Stdio>) -> Cmd {
        self.stdout = Some(s.into());
        self
    }

    /// For [`Cmd::spawn`]: where stderr goes (default: inherited).
    pub fn stderr(mut self, s: impl Into<Stdio>) -> Cmd {
        self.stderr = Some(s.into());
        self
    }

    /// The command line as logged: `cd DIR &&`, `env -i` when the
    /// environment is cleared, `NAME=value` for each variable set (secrets
    /// as `<secret>`), then the quoted program and arguments.
    pub fn shown(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.dir {
            parts.push(format!("cd {} &&", quote_os(d)));
        }
        if self.cleared {
            parts.push("env -i".to_string());
        }
        for (k, v) in &self.env {
            let v = match v {
                Some(v) => quote_os(v),
                None => "<secret>".to_string(),
            };
            parts.push(format!("{}={v}", k.to_string_lossy()));
        }
        parts.push(quote_os(&self.program));
        parts.extend(self.args.iter().map(|a| quote_os(a)));
        parts.join(" ")
    }

    fn prepare(&mut self) {
        let expected = nix::unistd::getpid();
        // SAFETY: between fork and exec only async-signal-safe calls:
        // prctl(PR_SET_PDEATHSIG) and getppid, no allocation, no locks.
        #[allow(unsafe_code)]
        unsafe {
            self.cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)?;
                // the parent died before the prctl took: die now, as it would have
                if nix::unistd::getppid() != expected {
                    return Err(nix::errno::Errno::ESRCH.into());
                }
                Ok(())
            });
        }
    }

    /// Start it and hand the child over (stdin null unless
    /// [`Cmd::stdin_piped`]; [`Cmd::input`] and [`Cmd::timeout`] are for the
    /// `output*` methods and refused here). Logged. The parent-death signal
    /// is the starting thread's: keep the child in a thread that outlives it.
    pub fn spawn(mut self) -> Result<Child, Error> {
        let shown = self.shown();
        if self.logged {
            crate::log::exec(&shown);
        }
        if self.input.is_some() || self.timeout.is_some() {
            return Err(Error::Io {
                command: shown,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "input and timeout apply to output(), not spawn()",
                ),
            });
        }
        self.prepare();
        self.cmd.stdin(if self.stdin_piped {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        if let Some(s) = self.stdout.take() {
            self.cmd.stdout(s);
        }
        if let Some(s) = self.stderr.take() {
            self.cmd.stderr(s);
        }
        self.cmd.spawn().map_err(|source| Error::Start {
            command: shown,
            source,
        })
    }

    /// Run to completion, whatever its exit status ([`Output::checked`]
    /// turns a failure into an error). Starting it failing, or the
    /// timeout passing, is an error.
    pub fn output_unchecked(mut self) -> Result<Output, Error> {
        let shown = self.shown();
        if self.logged {
            crate::log::exec(&shown);
        }
        self.prepare();
        let input = self.input.take();
        self.cmd
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().map_err(|source| Error::Start {
            command: shown.clone(),
            source,
        })?;
        let writer = match (input, child.stdin.take()) {
            (Some(bytes), Some(mut stdin)) => Some(thread::spawn(move || stdin.write_all(&bytes))),
            _ => None,
        };
        let out = reader(child.stdout.take());
        let err = reader(child.stderr.take());
        let status = match self.timeout.or_else(default_timeout) {
            None => child.wait(),
            Some(t) => match wait_deadline(&mut child, t) {
                Ok(Some(s)) => Ok(s),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Timeout {
                        command: shown,
                        timeout: t,
                    });
                }
                Err(e) => Err(e),
            },
        };
        let status = match status {
            Ok(s) => s,
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Io {
                    command: shown,
                    source,
                });
            }
        };
        if let Some(w) = writer {
            // A tool that exits without reading all its input fails on its
            // own terms; a broken pipe here adds nothing to that.
            let _ = w.join();
        }
        Ok(Output {
            command: shown,
            secret_stdout: self.secret_stdout,
            status: status.into(),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    }

    /// Run to completion; exit 0 or an [`Error::Failed`].
    pub fn output(self) -> Result<Output, Error> {
        self.output_unchecked()?.checked()
    }

    /// Run to completion; stdout of a successful run as text.
    pub fn stdout_text(self) -> Result<String, Error> {
        self.output().map(|o| o.stdout_str())
    }

    /// Run to completion, requiring success.
    pub fn run(self) -> Result<(), Error> {
        self.output().map(|_| ())
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

fn reader<R: Read + Send + 'static>(src: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = src {
            // A read error only truncates what is shown; the status decides.
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Wait for `child` until `timeout`; `None` when it is still running.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The last `n` non-empty lines of `s`.
pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn failure_tail(stderr: &[u8], stdout: &[u8]) -> String {
    let err = tail_lines(&String::from_utf8_lossy(stderr), STDERR_LINES);
    let out = tail_lines(&String::from_utf8_lossy(stdout), STDOUT_LINES);
    match (out.is_empty(), err.is_empty()) {
        (true, _) => err,
        (false, true) => out,
        (false, false) => format!("{out}\n{err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_line_pastes_back_into_a_shell() {
        let args = ["plain", "it's", "a b", "$HOME `x` \"q\"", "", "ü"];
        let c = Cmd::new("printf").arg("%s|").args(args);
        let line = c.shown();
        let out = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .expect("sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            args.map(|a| format!("{a}|")).concat()
        );
    }

    #[test]
    fn secrets_are_not_shown_and_reach_the_child() {
        let c = Cmd::new("sh")
            .arg("-c")
            .arg("printf %s \"$PW\"; cat")
            .secret_env("PW", "hunter2")
            .input("fromstdin");
        let shown = c.shown();
        assert_eq!(shown, "PW=<secret> sh -c 'printf %s \"$PW\"; cat'");
        let out = c.output().expect("runs");
        assert_eq!(out.stdout, b"hunter2fromstdin");
        assert!(!out.command.contains("hunter2"));
    }

    #[test]
    fn failure_has_typed_status_and_stderr_tail() {
        let err = Cmd::new("sh")
            .args(["-c", "echo out; echo boom >&2; exit 3"])
            .run()
            .expect_err("fails");
        assert_eq!(err.status(), Some(Status::Exited(3)));
        let msg = err.to_string();
        assert!(
            msg.starts_with("sh -c 'echo out; echo boom >&2; exit 3' failed (exit status 3):"),
            "{msg}"
        );
        assert!(msg.contains("boom") && msg.contains("out"), "{msg}");
        let err = Cmd::new("sh")
            .args(["-c", "kill -9 $$"])
            .run()
            .expect_err("killed");
        assert_eq!(err.status(), Some(Status::Signaled(9)));
    }

    #[test]
    fn a_secret_stdout_stays_out_of_the_error() {
        let script = "echo password=$PW; echo boom >&2; exit 1";
        let run = |c: Cmd| c.args(["-c", script]).secret_env("PW", "hunter2").run();
        let msg = run(Cmd::new("sh").secret_stdout())
            .expect_err("fails")
            .to_string();
        assert!(msg.contains("boom") && !msg.contains("hunter2"), "{msg}");
        let msg = run(Cmd::new("sh")).expect_err("fails").to_string();
        assert!(msg.contains("hunter2"), "stdout is shown by default: {msg}");
    }

    #[test]
    fn spawn_refuses_what_only_output_does() {
        assert!(Cmd::new("true").input("x").spawn().is_err());
        assert!(Cmd::new("true")
            .timeout(Duration::from_secs(1))
            .spawn()
            .is_err());
        let mut c = Cmd::new("cat")
            .stdin_piped()
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        drop(c.stdin.take());
        assert!(c.wait().expect("wait").success());
    }

    #[test]
    fn stdin_is_null_and_env_clear_sets_path() {
        let out = Cmd::new("cat").output().expect("cat");
        assert!(out.stdout.is_empty());
        let c = Cmd::new("sh")
            .env_clear()
            .args(["-c", "echo $PATH; echo ${HOME:-none}"]);
        assert!(c
            .shown()
            .starts_with("env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh"));
        assert_eq!(
            c.stdout_text().expect("sh"),
            "/usr/sbin:/usr/bin:/sbin:/bin\nnone\n"
        );
    }

    #[test]
    fn timeout_kills() {
        let t0 = Instant::now();
        let err = Cmd::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(200))
            .output()
            .expect_err("times out");
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn child_dies_with_the_thread_that_started_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let pidfile = dir.path().join("pid");
        let p = pidfile.clone();
        thread::spawn(move || {
            let mut child = Cmd::new("sh")
                .arg("-c")
                .arg(format!("echo $$ > {}; exec sleep 30", p.display()))
                .spawn()
                .expect("spawn");
            // leave it running: the thread ends, the child must not outlive it
            while !p.exists() {
                thread::sleep(Duration::from_millis(10));
            }
            let _ = child.stdin.take();
            std::mem::forget(child);
        })
        .join()
        .expect("thread");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        let t0 = Instant::now();
        loop {
            // reap it if it is our zombie, then check it is gone
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "child {pid} outlived its thread"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}
