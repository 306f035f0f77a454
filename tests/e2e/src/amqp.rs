//! The fault suite's AMQP workload: the `amqp-publisher` binary of this
//! crate (lapin, publisher confirms; src/bin/amqp-publisher.rs) run in the
//! client netns with `ip netns exec`, as the cluster's `openstack` user,
//! listing both brokers as OpenStack's services do. Its event lines are
//! stamped here as they arrive.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use nib_host::cmd::wait_deadline;
use nib_host::Cmd;

use crate::checker::AmqpRun;

/// The durable queue the publisher writes to (mirrored by the image's
/// `ha-all` policy like any queue not named `amq.*`).
pub const QUEUE: &str = "nib_e2e_faults";
/// The RabbitMQ user the image's definitions create (seed 000's).
pub const USER: &str = "openstack";

/// One line of the publisher's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected(String),
    ConnectFailed(String),
    Confirmed(u64),
    Nacked(u64),
    Unknown(u64),
    Failed(u64),
    Got(u64),
    Drained(String, u64),
    Other(String),
}

pub fn parse_event(line: &str) -> Event {
    let mut w = line.split_whitespace();
    let (kind, arg) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
    let id = arg.parse::<u64>();
    match (kind, id) {
        ("confirmed", Ok(i)) => Event::Confirmed(i),
        ("nacked", Ok(i)) => Event::Nacked(i),
        ("unknown", Ok(i)) => Event::Unknown(i),
        ("failed", Ok(i)) => Event::Failed(i),
        ("got", Ok(i)) => Event::Got(i),
        ("connected", _) if !arg.is_empty() => Event::Connected(arg.to_string()),
        ("connect-failed", _) if !arg.is_empty() => Event::ConnectFailed(arg.to_string()),
        ("drained", _) => match w.next().and_then(|n| n.parse().ok()) {
            Some(n) => Event::Drained(arg.to_string(), n),
            None => Event::Other(line.to_string()),
        },
        _ => Event::Other(line.to_string()),
    }
}

/// The cluster's `openstack` RabbitMQ password, from the run's cluster.toml.
pub fn password(cluster_toml: &Path) -> Result<String> {
    let text = std::fs::read_to_string(cluster_toml)
        .with_context(|| format!("reading {}", cluster_toml.display()))?;
    let doc: toml::Table = text.parse().context("parsing cluster.toml")?;
    doc.get("secrets")
        .and_then(|s| s.get("rabbitmq_openstack_password"))
        .and_then(|p| p.as_str())
        .map(str::to_string)
        .context("cluster.toml has no secrets.rabbitmq_openstack_password")
}

/// How to run the publisher binary.
#[derive(Debug, Clone)]
pub struct Client {
    pub bin: PathBuf,
    pub netns: String,
    pub hosts: Vec<String>,
    pub password: String,
    /// Its stderr goes here.
    pub log: PathBuf,
}

impl Client {
    fn command(&self, mode: &str) -> Result<Cmd> {
        let err = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        Ok(Cmd::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(&self.bin)
            .args([mode, "--hosts", &self.hosts.join(","), "--queue", QUEUE])
            .env("NIB_E2E_AMQP_USER", USER)
            .secret_env("NIB_E2E_AMQP_PASSWORD", &self.password)
            .stdout(Stdio::piped())
            .stderr(err))
    }

    /// Start publishing (one message every 200 ms).
    pub fn publish(&self) -> Result<Publisher> {
        let started = Instant::now();
        let mut child = self
            .command("publish")?
            .stdin_piped()
            .spawn()
            .context("starting the AMQP publisher")?;
        let stdin = child.stdin.take();
        let out = child.stdout.take().context("publisher stdout")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let ev = parse_event(&line);
                if let Ok(mut e) = sink.lock() {
                    e.push((Instant::now(), ev));
                }
            }
        });
        Ok(Publisher {
            child,
            stdin,
            events,
            reader: Some(reader),
            started,
        })
    }

    /// Read every message of the queue back (the first host that answers;
    /// retried for up to `patience` while brokers restart).
    pub fn drain(&self, patience: Duration) -> Result<(String, BTreeSet<u64>)> {
        let deadline = Instant::now() + patience;
        loop {
            let ran = self
                .command("drain")?
                .timeout(Duration::from_secs(120))
                .output_unchecked()?;
            let events: Vec<Event> = ran.stdout_str().lines().map(parse_event).collect();
            let host = events.iter().find_map(|e| match e {
                Event::Drained(h, _) => Some(h.clone()),
                _ => None,
            });
            if let (true, Some(h)) = (ran.success(), host) {
                let ids = events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Got(i) => Some(*i),
                        _ => None,
                    })
                    .collect();
                return Ok((h, ids));
            }
            if Instant::now() >= deadline {
                bail!("draining {QUEUE}: {}", ran.failure());
            }
            thread::sleep(Duration::from_secs(2));
        }
    }
}

pub struct Publisher {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
    reader: Option<JoinHandle<()>>,
    started: Instant,
}

/// Everything one publisher run said.
#[derive(Debug, Clone)]
pub struct Published {
    pub started: Instant,
    pub stopped: Instant,
    pub events: Vec<(Instant, Event)>,
}

impl Published {
    /// For the checker, with what a drain read back.
    pub fn run(&self, consumed: Option<BTreeSet<u64>>) -> AmqpRun {
        let confirmed = self
            .events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Confirmed(i) => Some((*i, *t)),
                _ => None,
            })
            .collect();
        let published = self
            .events
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Event::Confirmed(_) | Event::Nacked(_) | Event::Unknown(_) | Event::Failed(_)
                )
            })
            .count();
        AmqpRun {
            started: self.started,
            stopped: self.stopped,
            confirmed,
            published,
            consumed,
        }
    }

    /// `ms_after_t0,event` lines.
    pub fn csv(&self, t0: Instant) -> String {
        let mut s = String::from("at_ms,event\n");
        for (t, e) in &self.events {
            s.push_str(&format!(
                "{},{e:?}\n",
                t.saturating_duration_since(t0).as_millis()
            ));
        }
        s
    }
}

impl Publisher {
    pub fn confirmed(&self) -> usize {
        self.events
            .lock()
            .map(|e| {
                e.iter()
                    .filter(|(_, e)| matches!(e, Event::Confirmed(_)))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Close its stdin (it stops after the publish in flight), wait.
    pub fn finish(mut self) -> Result<Published> {
        let stopped = Instant::now();
        drop(self.stdin.take());
        // A confirm wait is at most 10 s, a close 2 s.
        if wait_deadline(&mut self.child, Duration::from_secs(20))?.is_none() {
            crate::log("AMQP publisher did not stop within 20 s of its stdin closing; killing it");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let events = self.events.lock().map(|e| e.clone()).unwrap_or_default();
        Ok(Published {
            started: self.started,
            stopped,
            events,
        })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publisher_lines() {
        assert_eq!(parse_event("confirmed 17"), Event::Confirmed(17));
        assert_eq!(parse_event("nacked 3"), Event::Nacked(3));
        assert_eq!(
            parse_event("unknown 4 confirm: no answer within 10s"),
            Event::Unknown(4)
        );
        assert_eq!(parse_event("failed 5 no connection"), Event::Failed(5));
        assert_eq!(parse_event("got 9"), Event::Got(9));
        assert_eq!(
            parse_event("connected 198.18.0.11"),
            Event::Connected("198.18.0.11".into())
        );
        assert_eq!(
            parse_event("connect-failed 198.18.0.12 IO error: refused"),
            Event::ConnectFailed("198.18.0.12".into())
        );
        assert_eq!(
            parse_event("drained 198.18.0.11 120"),
            Event::Drained("198.18.0.11".into(), 120)
        );
        assert_eq!(
            parse_event("confirmed x"),
            Event::Other("confirmed x".into())
        );
        assert_eq!(parse_event(""), Event::Other(String::new()));
    }

    #[test]
    fn published_counts_every_attempt_and_keeps_confirm_times() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let p = Published {
            started: t0,
            stopped: at(5000),
            events: vec![
                (at(10), Event::Connected("a".into())),
                (at(200), Event::Confirmed(1)),
                (at(400), Event::Unknown(2)),
                (at(600), Event::Failed(3)),
                (at(4000), Event::Confirmed(4)),
            ],
        };
        let r = p.run(Some([1].into_iter().collect()));
        assert_eq!(r.published, 4);
        assert_eq!(r.confirmed, vec![(1, at(200)), (4, at(4000))]);
        assert!((crate::checker::publish_gap(&r) - 3.8).abs() < 1e-6);
    }
}
