//! The fault suite's AMQP client (tests/e2e/src/amqp.rs runs it in the
//! client netns with `ip netns exec`, so every socket it opens is there).
//!
//! `amqp-publisher publish --hosts A,B --queue Q [--every-ms 200]
//! [--confirm-timeout-ms MS]` publishes message 1, 2, 3, … (the id is
//! the body), persistent, to durable queue Q with publisher confirms, one
//! every `--every-ms`, each confirm awaited before the next publish, until
//! its stdin closes. By default a confirm is awaited as lapin does it, with
//! no timeout of ours: a dead broker is noticed by lapin's heartbeat check
//! (no frame for twice the heartbeat the broker proposes, which lapin
//! takes), as any client on library defaults would. Hosts are tried in turn, as oslo.messaging's
//! `transport_url=rabbit://…@c1,…@c2/` does: a failed connect, publish or
//! confirm moves on to the next one.
//!
//! `amqp-publisher drain --hosts A,B --queue Q` reads every message of Q
//! through the first host that answers (basic.get without ack: the broker
//! requeues them when the channel closes, so a drain changes nothing).
//!
//! Credentials: `NIB_E2E_AMQP_USER`, `NIB_E2E_AMQP_PASSWORD` (never on the
//! command line). One line per event on stdout, flushed at once:
//! `connected HOST`, `connect-failed HOST ERR`, `confirmed ID`, `nacked ID`,
//! `unknown ID ERR` (published, no confirm within the timeout or the
//! connection failed first), `failed ID ERR` (not published), `got ID`,
//! `drained HOST N`.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

struct Args {
    mode: String,
    hosts: Vec<String>,
    queue: String,
    every: Duration,
    confirm_timeout: Option<Duration>,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .context("usage: amqp-publisher publish|drain --hosts A,B --queue Q")?;
    let mut a = Args {
        mode,
        hosts: Vec::new(),
        queue: String::new(),
        every: Duration::from_millis(200),
        confirm_timeout: None,
    };
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--hosts" => a.hosts = v.split(',').map(str::to_string).collect(),
            "--queue" => a.queue = v,
            "--every-ms" => a.every = Duration::from_millis(v.parse()?),
            "--confirm-timeout-ms" => a.confirm_timeout = Some(Duration::from_millis(v.parse()?)),
            _ => bail!("unknown option {k}"),
        }
    }
    if a.hosts.is_empty() || a.queue.is_empty() {
        bail!("--hosts and --queue are required");
    }
    Ok(a)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One line, no newlines: errors go on the event line.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}

/// Percent-encode for the userinfo of an AMQP URI.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `fut`, or an error once `t` has passed.
fn within<T>(t: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> Result<T> {
    futures_lite::future::block_on(futures_lite::future::or(async { Ok(fut.await) }, async {
        async_io::Timer::after(t).await;
        Err(anyhow!("{what}: no answer within {t:?}"))
    }))
}

struct Session {
    conn: Connection,
    channel: Channel,
}

fn connect(host: &str, queue: &str, confirms: bool) -> Result<Session> {
    let user = std::env::var("NIB_E2E_AMQP_USER").context("NIB_E2E_AMQP_USER")?;
    let pw = std::env::var("NIB_E2E_AMQP_PASSWORD").context("NIB_E2E_AMQP_PASSWORD")?;
    let uri = format!(
        "amqp://{}:{}@{host}:5672/%2f?connection_timeout={}",
        enc(&user),
        enc(&pw),
        CONNECT_TIMEOUT.as_millis()
    );
    let conn = within(
        CONNECT_TIMEOUT + Duration::from_secs(2),
        "connect",
        Connection::connect(&uri, ConnectionProperties::default()),
    )??;
    let t = Duration::from_secs(5);
    let channel = within(t, "channel.open", conn.create_channel())??;
    if confirms {
        within(
            t,
            "confirm.select",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )??;
    }
    within(
        t,
        "queue.declare",
        channel.queue_declare(
            queue,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )??;
    Ok(Session { conn, channel })
}

fn close(s: Session) {
    let _ = within(Duration::from_secs(2), "close", s.conn.close(200, "bye"));
}

fn publish(a: &Args) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        // Until stdin closes (the suite closes it to stop the publisher).
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
        flag.store(true, Ordering::SeqCst);
    });
    let mut host_ix = 0usize;
    let mut session: Option<Session> = None;
    let mut id: u64 = 0;
    let mut due = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        }
        due += a.every;
        id += 1;
        if session.is_none() {
            let host = &a.hosts[host_ix % a.hosts.len()];
            match connect(host, &a.queue, true) {
                Ok(s) => {
                    say(&format!("connected {host}"));
                    session = Some(s);
                }
                Err(e) => {
                    say(&format!(
                        "connect-failed {host} {}",
                        one_line(&format!("{e:#}"))
                    ));
                    host_ix += 1;
                }
            }
        }
        let Some(s) = &session else {
            say(&format!("failed {id} no connection"));
            continue;
        };
        let body = id.to_string();
        let sent = within(
            Duration::from_secs(5),
            "basic.publish",
            s.channel.basic_publish(
                "",
                &a.queue,
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            ),
        );
        let confirm = match sent {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                say(&format!("failed {id} {}", one_line(&e)));
                if let Some(s) = session.take() {
                    close(s);
                }
                host_ix += 1;
                continue;
            }
            Err(e) => {
                say(&format!("unknown {id} {}", one_line(&format!("{e:#}"))));
                if let Some(s) = session.take() {
                    close(s);
                }
                host_ix += 1;
                continue;
            }
        };
        let confirmed = match a.confirm_timeout {
            Some(t) => within(t, "confirm", confirm),
            None => Ok(futures_lite::future::block_on(confirm)),
        };
        match confirmed {
            Ok(Ok(Confirmation::Ack(_))) => say(&format!("confirmed {id}")),
            Ok(Ok(Confirmation::Nack(_))) => say(&format!("nacked {id}")),
            Ok(Ok(Confirmation::NotRequested)) => {
                say(&format!("unknown {id} confirms not enabled"))
            }
            Ok(Err(e)) => {
                say(&format!("unknown {id} {}", one_line(&e)));
                if let Some(s) = session.take() {
                    close(s);
                }
                host_ix += 1;
            }
            Err(e) => {
                say(&format!("unknown {id} {}", one_line(&format!("{e:#}"))));
                if let Some(s) = session.take() {
                    close(s);
                }
                host_ix += 1;
            }
        }
        // A publish that took longer than the pace starts the next at once.
        due = due.max(Instant::now());
    }
    if let Some(s) = session.take() {
        close(s);
    }
    Ok(())
}

fn drain(a: &Args) -> Result<()> {
    let mut last = anyhow!("no host");
    for host in &a.hosts {
        let s = match connect(host, &a.queue, false) {
            Ok(s) => s,
            Err(e) => {
                say(&format!(
                    "connect-failed {host} {}",
                    one_line(&format!("{e:#}"))
                ));
                last = e;
                continue;
            }
        };
        say(&format!("connected {host}"));
        let mut n = 0u64;
        loop {
            let got = within(
                Duration::from_secs(10),
                "basic.get",
                s.channel
                    .basic_get(&a.queue, BasicGetOptions { no_ack: false }),
            )??;
            let Some(m) = got else { break };
            say(&format!(
                "got {}",
                String::from_utf8_lossy(&m.delivery.data)
            ));
            n += 1;
        }
        say(&format!("drained {host} {n}"));
        close(s);
        return Ok(());
    }
    Err(last.context("no host answered"))
}

fn main() -> Result<()> {
    let a = parse_args()?;
    match a.mode.as_str() {
        "publish" => publish(&a),
        "drain" => drain(&a),
        m => bail!("unknown mode {m}"),
    }
}
