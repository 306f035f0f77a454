//! A MariaDB client in the test's client namespace that talks to the pair
//! only through the VIP, as an OpenStack service would; and a writer that
//! keeps inserting numbered rows through it during a failover and records
//! which inserts were acknowledged.

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

#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: u64,
    pub started: Instant,
    pub finished: Instant,
    pub acked: bool,
}

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
                    let expired = started.elapsed() > Duration::from_secs(8);
                    if status.is_none() && !expired {
                        return true;
                    }
                    if status.is_none() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    let a = Attempt {
                        id: *id,
                        started: *started,
                        finished: Instant::now(),
                        acked: status.is_some_and(|s| s.success()),
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
