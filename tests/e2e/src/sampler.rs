//! The fault suite's samplers: about once a second, on each node at the
//! same moment, whether its MariaDB is writable (`@@read_only` OFF *and* an
//! insert by the suite's unprivileged user over TCP from the client netns
//! commits) and whether its eth0 carries the VIP (`ip -o addr` of its
//! netns, only while the link is up: a power-cut node's link is down).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nib_host::Cmd;

use crate::cluster::{PREFIX, VIP};
use crate::writer::{SqlClient, DB};

/// The table the write probe inserts into (not the writers' `acks`).
pub const PROBE_TABLE: &str = "probes";

/// SQL (root, on the primary before the run) that creates the probe table.
pub fn setup_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {DB}.{PROBE_TABLE} (id BIGINT PRIMARY KEY, node VARCHAR(32)) ENGINE=InnoDB;"
    )
}

/// What to sample on one node.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub netns: String,
    /// The suite's SQL user to this node's own address.
    pub sql: SqlClient,
    /// First probe id (distinct per node: probes never collide on merge).
    pub first_id: u64,
    /// The node's PID 1 now (0: down), to ask its corosync for quorum.
    pub pid1: Arc<AtomicI32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSample {
    pub name: String,
    /// `@@global.read_only` as the node answered it; `None` without answer.
    pub read_only: Option<bool>,
    /// The probe insert committed within [`WRITABLE_WITHIN`].
    pub write_ok: bool,
    /// How long the probe (read_only + insert) took, ms.
    pub probe_ms: u64,
    pub vip: bool,
    /// `corosync-quorumtool -s` inside the node: quorate (`None`: down or
    /// no answer).
    pub quorate: Option<bool>,
}

impl NodeSample {
    /// Writable: read_only OFF and accepting writes.
    pub fn writable(&self) -> bool {
        self.read_only == Some(false) && self.write_ok
    }
}

/// One sampling round: every node probed at once, from `at`.
#[derive(Debug, Clone)]
pub struct Round {
    pub at: Instant,
    pub nodes: Vec<NodeSample>,
}

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// A node counts as writable only when its probe committed within one
/// sampling period: a primary whose commit waits for a replica it cannot
/// reach (semi-sync without fallback) acknowledges nothing and does not
/// count (issue 17). A probe is a mariadb client started in the client
/// netns; on a healthy primary it took well under 100 ms here.
pub const WRITABLE_WITHIN: Duration = Duration::from_secs(1);

fn sample(t: &Target, id: u64) -> NodeSample {
    let sql = format!(
        "SELECT @@global.read_only; INSERT INTO {PROBE_TABLE} (id, node) VALUES ({id}, '{}')",
        t.name
    );
    let began = Instant::now();
    let (read_only, committed) = match t.sql.output(&sql, PROBE_TIMEOUT) {
        Ok(o) => {
            let ro = match o.stdout_str().lines().next().map(str::trim) {
                Some("0") => Some(false),
                Some("1") => Some(true),
                _ => None,
            };
            (ro, o.success())
        }
        Err(_) => (None, false),
    };
    let took = began.elapsed();
    let write_ok = committed && took <= WRITABLE_WITHIN;
    let pid1 = t.pid1.load(Ordering::SeqCst);
    let quorate = (pid1 > 0)
        .then(|| {
            Cmd::new("nsenter")
                .args(["-t", &pid1.to_string(), "-a", "--"])
                .args(["corosync-quorumtool", "-s"])
                .timeout(Duration::from_secs(3))
                .unlogged()
                .output_unchecked()
                .ok()
                .and_then(|o| crate::parse::corosync_quorum(&o.stdout_str()).ok())
                .map(|q| q.quorate)
        })
        .flatten();
    let want = format!("{VIP}/{PREFIX}");
    let vip = Cmd::new("ip")
        .args([
            "-n", &t.netns, "-4", "-o", "addr", "show", "dev", "eth0", "up",
        ])
        .timeout(Duration::from_secs(5))
        .unlogged()
        .output_unchecked()
        .ok()
        .filter(|o| o.success())
        .is_some_and(|o| crate::parse::ip_addr_show(&o.stdout_str()).contains(&want));
    NodeSample {
        name: t.name.clone(),
        read_only,
        write_ok,
        probe_ms: took.as_millis() as u64,
        vip,
        quorate,
    }
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    rounds: Arc<Mutex<Vec<Round>>>,
    handle: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(targets: Vec<Target>, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let (flag, sink) = (stop.clone(), rounds.clone());
        let handle = thread::spawn(move || {
            let mut seq = 0u64;
            let mut due = Instant::now();
            while !flag.load(Ordering::SeqCst) {
                let at = Instant::now();
                let nodes = thread::scope(|s| {
                    let jobs: Vec<_> = targets
                        .iter()
                        .map(|t| s.spawn(move || sample(t, t.first_id + seq)))
                        .collect();
                    jobs.into_iter()
                        .filter_map(|j| j.join().ok())
                        .collect::<Vec<_>>()
                });
                seq += 1;
                if let Ok(mut r) = sink.lock() {
                    r.push(Round { at, nodes });
                }
                due += every;
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                } else {
                    due = now;
                }
            }
        });
        Sampler {
            stop,
            rounds,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Vec<Round> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.rounds.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The rounds as CSV, ms after `t0`:
/// `at_ms,node,read_only,write_ok,probe_ms,writable,vip,quorate`.
pub fn rounds_csv(t0: Instant, rounds: &[Round]) -> String {
    let mut csv = String::from("at_ms,node,read_only,write_ok,probe_ms,writable,vip,quorate\n");
    for r in rounds {
        let at = r.at.saturating_duration_since(t0).as_millis();
        for n in &r.nodes {
            let ro = match n.read_only {
                Some(true) => "ON",
                Some(false) => "OFF",
                None => "?",
            };
            let q = match n.quorate {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            csv.push_str(&format!(
                "{at},{},{ro},{},{},{},{},{q}\n",
                n.name,
                n.write_ok,
                n.probe_ms,
                n.writable(),
                n.vip
            ));
        }
    }
    csv
}
