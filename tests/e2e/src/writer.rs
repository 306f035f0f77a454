//! A MariaDB client in the test's client namespace that talks to the pair
//! only through the VIP, as an OpenStack service would; and a writer that
//! keeps inserting numbered rows through it during a failover and records
//! which inserts were acknowledged; and the fault suite's workload, one
//! such writer through the VIP and one through each node's own address.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use nib_host::Cmd;

pub const DB: &str = "nib_e2e";
pub const USER: &str = "nib_e2e";

#[derive(Debug, Clone)]
pub struct SqlClient {
    netns: PathBuf,
    cnf: PathBuf,
    host: String,
}

/// A fresh random password for the suite's own SQL user (not a cluster secret).
pub fn random_password() -> Result<String> {
    let mut buf = [0u8; 18];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(buf))
}

impl SqlClient {
    /// Credentials go in a 0600 option file, never on a command line.
    pub fn new(netns: &Path, dir: &Path, host: &str, password: &str) -> Result<Self> {
        let cnf = dir.join("client.cnf");
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&cnf)
            .with_context(|| format!("creating {}", cnf.display()))?;
        write!(
            f,
            "[client]\nuser={USER}\npassword={password}\nprotocol=tcp\nconnect-timeout=1\n"
        )
        .with_context(|| format!("writing {}", cnf.display()))?;
        Ok(SqlClient {
            netns: netns.to_path_buf(),
            cnf,
            host: host.to_string(),
        })
    }

    /// Unlogged: the writer runs five a second.
    fn command(&self, sql: &str) -> Cmd {
        Cmd::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg("mariadb")
            .arg(format!("--defaults-extra-file={}", self.cnf.display()))
            .args([
                "-h",
                &self.host,
                "--batch",
                "--skip-column-names",
                DB,
                "-e",
                sql,
            ])
            .unlogged()
    }

    /// The same credentials, to another server (a node's own address).
    pub fn with_host(&self, host: &str) -> SqlClient {
        SqlClient {
            host: host.to_string(),
            ..self.clone()
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Run `sql` (unlogged), whatever its exit status, killed after `timeout`.
    pub fn output(&self, sql: &str, timeout: Duration) -> Result<nib_host::Output> {
        Ok(self.command(sql).timeout(timeout).output_unchecked()?)
    }

    /// Run `sql` through the VIP; stdout.
    pub fn query(&self, sql: &str) -> Result<String> {
        self.command(sql)
            .timeout(Duration::from_secs(10))
            .output_unchecked()?
            .into_stdout()
            .with_context(|| format!("SQL through {}", self.host))
    }
}

/// SQL (run as root on the primary) that creates the suite's user, database
/// and table; replicated to the replica like any write.
pub fn setup_sql(password: &str) -> String {
    format!(
        "CREATE DATABASE IF NOT EXISTS {DB}; \
         CREATE USER IF NOT EXISTS '{USER}'@'198.18.0.%' IDENTIFIED BY '{password}'; \
         GRANT ALL ON {DB}.* TO '{USER}'@'198.18.0.%'; \
         CREATE TABLE IF NOT EXISTS {DB}.acks (id BIGINT PRIMARY KEY, note VARCHAR(32)) ENGINE=InnoDB;"
    )
}

/// What became of one insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client exited 0: the server committed it (and, semi-sync,
    /// a replica acknowledged it or the wait timed out).
    Acked,
    /// The client exited non-zero: connect refused or timed out, read-only
    /// server, duplicate key…: not committed.
    Failed,
    /// No answer within the writer's timeout: killed, may or may not have
    /// been committed.
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Acked => "acked",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: u64,
    pub started: Instant,
    pub finished: Instant,
    pub acked: bool,
    pub outcome: Outcome,
}

/// How long an insert may take before the writer kills it (`Unknown`).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);

/// Inserts row `id = first, first+1, …` through the VIP, one new attempt
/// every `every` (each its own connection, so a dead server costs one
/// attempt its connect timeout, not the writer its pace).
pub struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<Attempt>>>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(client: SqlClient, first: u64, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let done = Arc::new(Mutex::new(Vec::new()));
        let sink = done.clone();
        let handle = thread::spawn(move || {
            let mut inflight: Vec<(u64, Instant, Child)> = Vec::new();
            let mut next = first;
            let mut due = Instant::now();
            loop {
                let stopping = flag.load(Ordering::SeqCst);
                if !stopping && Instant::now() >= due {
                    let sql = format!("INSERT INTO acks (id, note) VALUES ({next}, 'writer')");
                    let c = client
                        .command(&sql)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    if let Ok(child) = c.spawn() {
                        inflight.push((next, Instant::now(), child));
                    }
                    next += 1;
                    due += every;
                }
                inflight.retain_mut(|(id, started, child)| {
                    let status = child.try_wait().ok().flatten();
                    let expired = started.elapsed() > ATTEMPT_TIMEOUT;
                    if status.is_none() && !expired {
                        return true;
                    }
                    if status.is_none() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    let outcome = match status {
                        Some(s) if s.success() => Outcome::Acked,
                        Some(_) => Outcome::Failed,
                        None => Outcome::Unknown,
                    };
                    let a = Attempt {
                        id: *id,
                        started: *started,
                        finished: Instant::now(),
                        acked: outcome == Outcome::Acked,
                        outcome,
                    };
                    if let Ok(mut d) = sink.lock() {
                        d.push(a);
                    }
                    false
                });
                if stopping && inflight.is_empty() {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        Writer {
            stop,
            done,
            handle: Some(handle),
        }
    }

    /// The attempts finished so far.
    pub fn snapshot(&self) -> Vec<Attempt> {
        self.done.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Stop starting attempts, let the in-flight ones finish, return all.
    pub fn finish(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let mut all = self.snapshot();
        all.sort_by_key(|a| a.id);
        all
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One writer per target, each with its own block of ids
/// (`first + i * STREAM_IDS`), all at the same pace: the fault suite's
/// workload (through the VIP and through each node's own address).
pub struct Workload {
    streams: Vec<(String, Writer)>,
}

/// Ids per stream: stream `i` writes `first + i * STREAM_IDS + 0, 1, …`.
pub const STREAM_IDS: u64 = 1_000_000;

/// One invocation of the workload: which stream, the attempt.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub stream: String,
    pub attempt: Attempt,
}

impl Workload {
    /// `targets`: (stream name, client) pairs.
    pub fn start(targets: Vec<(String, SqlClient)>, first: u64, every: Duration) -> Self {
        let streams = targets
            .into_iter()
            .enumerate()
            .map(|(i, (name, c))| (name, Writer::start(c, first + i as u64 * STREAM_IDS, every)))
            .collect();
        Workload { streams }
    }

    /// Acknowledged inserts so far, per stream.
    pub fn acked(&self) -> Vec<(String, usize)> {
        self.streams
            .iter()
            .map(|(n, w)| (n.clone(), w.snapshot().iter().filter(|a| a.acked).count()))
            .collect()
    }

    /// Stop every stream (in-flight inserts run to their end or timeout);
    /// the whole history, by start time.
    pub fn finish(self) -> Vec<Invocation> {
        let stops: Vec<_> = self.streams.iter().map(|(_, w)| w.stop.clone()).collect();
        for s in stops {
            s.store(true, Ordering::SeqCst);
        }
        let mut all: Vec<Invocation> = self
            .streams
            .into_iter()
            .flat_map(|(stream, w)| {
                w.finish().into_iter().map(move |attempt| Invocation {
                    stream: stream.clone(),
                    attempt,
                })
            })
            .collect();
        all.sort_by_key(|i| (i.attempt.started, i.attempt.id));
        all
    }
}

/// The history as CSV, times in ms after `t0`:
/// `stream,id,started_ms,finished_ms,outcome`.
pub fn history_csv(t0: Instant, history: &[Invocation]) -> String {
    let ms = |t: Instant| -> i64 {
        if t >= t0 {
            t.duration_since(t0).as_millis() as i64
        } else {
            -(t0.duration_since(t).as_millis() as i64)
        }
    };
    let mut csv = String::from("stream,id,started_ms,finished_ms,outcome\n");
    for i in history {
        let a = &i.attempt;
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            i.stream,
            a.id,
            ms(a.started),
            ms(a.finished),
            a.outcome.as_str()
        ));
    }
    csv
}
