//! One function per fact the suite asserts about a node or the pair. Each
//! returns `Err` saying what it saw, so [`crate::wait::until`] can poll it
//! and report the last observation on timeout.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use nib_host::Cmd;

use crate::net::Netns;
use crate::node::Node;
use crate::parse;

const SHORT: Duration = Duration::from_secs(15);

/// systemd inside the node finished booting (`running`, or `degraded` with
/// the failed units named).
pub fn booted(n: &Node) -> Result<String> {
    let ran = n.exec_for(&["systemctl", "is-system-running"], SHORT)?;
    let state = ran.stdout_str().trim().to_string();
    match state.as_str() {
        "running" => Ok(state),
        "degraded" => {
            let failed = n
                .exec_for(
                    &[
                        "systemctl",
                        "--failed",
                        "--no-legend",
                        "--plain",
                        "--no-pager",
                    ],
                    SHORT,
                )
                .map(|r| r.stdout_str().replace('\n', "; "))
                .unwrap_or_default();
            Ok(format!("degraded (failed: {failed})"))
        }
        _ => bail!("{}: system state `{state}`", n.name),
    }
}

/// `nib-firstboot.service` has run (succeeded or failed) on this boot: the
/// node's configuration is in place or the journal says why not. (The
/// whole boot also waits for nib-cluster.service, which waits for the peer.)
pub fn firstboot_done(n: &Node) -> Result<String> {
    let ran = n.exec_for(&["systemctl", "is-active", "nib-firstboot.service"], SHORT)?;
    let state = ran.stdout_str().trim().to_string();
    match state.as_str() {
        "active" | "failed" => Ok(state),
        _ => bail!("{}: nib-firstboot.service is `{state}`", n.name),
    }
}

/// The node has only its connected subnet: no default route.
pub fn no_default_route(n: &Node) -> Result<()> {
    let routes = n.netns().ip(&["-4", "route", "show", "default"])?;
    ensure!(
        routes.trim().is_empty(),
        "{} has a default route: {routes}",
        n.name
    );
    Ok(())
}

/// A TCP connection from `from` to `addr:port` succeeds.
pub fn tcp_reachable(from: &Node, addr: &str, port: u16) -> Result<()> {
    let script = format!("exec 3<>/dev/tcp/{addr}/{port}");
    let ran = from.exec_for(&["bash", "-c", &script], Duration::from_secs(5))?;
    ensure!(
        ran.success(),
        "{} cannot reach {addr}:{port}: {}",
        from.name,
        crate::tail(&ran.stderr_str(), 2)
    );
    Ok(())
}

/// First boot's units ran and succeeded on this boot: nib-firstboot.service
/// and the two it leaves its slow steps to (SSH host keys, MariaDB datadir).
pub fn firstboot_succeeded(n: &Node) -> Result<()> {
    for unit in [
        "nib-firstboot.service",
        "nib-hostkeys.service",
        "nib-datadir.service",
    ] {
        unit_succeeded(n, unit)?;
    }
    Ok(())
}

fn unit_succeeded(n: &Node, unit: &str) -> Result<()> {
    let out = n.exec(&[
        "systemctl",
        "show",
        "-p",
        "ActiveState",
        "-p",
        "Result",
        unit,
    ])?;
    let active = out.contains("ActiveState=active");
    let success = out.contains("Result=success");
    if active && success {
        return Ok(());
    }
    let journal = n
        .exec_for(
            &["journalctl", "-b", "-u", unit, "--no-pager", "-o", "cat"],
            SHORT,
        )
        .map(|r| crate::tail(&r.stdout_str(), 12))
        .unwrap_or_default();
    bail!(
        "{}: {unit} {} ; journal: {journal}",
        n.name,
        out.replace('\n', " ")
    )
}

/// corosync says the pair is quorate with both nodes voting.
pub fn corosync_quorate(n: &Node, expect_nodes: u32) -> Result<parse::Quorum> {
    // Exits non-zero when not quorate: read the output either way.
    let ran = n.exec_for(&["corosync-quorumtool", "-s"], SHORT)?;
    let q = parse::corosync_quorum(&ran.stdout_str())
        .with_context(|| format!("{}: {}", n.name, ran.failure()))?;
    ensure!(
        q.quorate && q.nodes == expect_nodes && q.total_votes == expect_nodes,
        "{}: corosync {q:?}, want quorate with {expect_nodes} nodes",
        n.name
    );
    Ok(q)
}

/// With the arbiter: corosync on `n` is quorate with both nodes and the
/// quorum device's vote (3 expected votes, 3 total, `Qdevice` voting).
pub fn corosync_quorate_qdevice(n: &Node) -> Result<parse::Quorum> {
    let ran = n.exec_for(&["corosync-quorumtool", "-s"], SHORT)?;
    let q = parse::corosync_quorum(&ran.stdout_str())
        .with_context(|| format!("{}: {}", n.name, ran.failure()))?;
    ensure!(
        q.quorate && q.nodes == 2 && q.expected_votes == 3 && q.total_votes == 3 && q.qdevice_vote,
        "{}: corosync {q:?}, want quorate with 2 nodes and the Qdevice vote (3 of 3 expected)",
        n.name
    );
    Ok(q)
}

/// corosync on `n` answers and says whether it is quorate (`None`: no
/// answer). For the samplers: cheap (a C tool), no retries.
pub fn corosync_quorate_now(n: &Node) -> Option<bool> {
    let ran = n
        .exec_for(&["corosync-quorumtool", "-s"], Duration::from_secs(3))
        .ok()?;
    parse::corosync_quorum(&ran.stdout_str())
        .ok()
        .map(|q| q.quorate)
}

/// corosync-qnetd on the arbiter lists cluster `name` with the node ids
/// `ids` connected; their votes.
pub fn qnetd_lists(arbiter: &Node, name: &str, ids: &[u32]) -> Result<Vec<(u32, String)>> {
    let ran = arbiter.exec_for(&["corosync-qnetd-tool", "-l"], SHORT)?;
    let out = ran
        .into_stdout()
        .with_context(|| format!("corosync-qnetd-tool -l on {}", arbiter.name))?;
    let clusters = parse::qnetd_clusters(&out);
    let Some(c) = clusters.iter().find(|c| c.name == name) else {
        bail!(
            "{}: qnetd lists clusters {:?}, not {name}",
            arbiter.name,
            clusters.iter().map(|c| &c.name).collect::<Vec<_>>()
        );
    };
    let got: BTreeSet<u32> = c.nodes.iter().map(|n| n.0).collect();
    let want: BTreeSet<u32> = ids.iter().copied().collect();
    ensure!(
        got == want,
        "{}: qnetd has nodes {got:?} of {name} connected, want {want:?}",
        arbiter.name
    );
    Ok(c.nodes.clone())
}

/// The arbiter's first boot ran and qnetd is active.
pub fn arbiter_up(a: &Node) -> Result<()> {
    for unit in [
        "nib-firstboot.service",
        "nib-hostkeys.service",
        "corosync-qnetd.service",
    ] {
        unit_succeeded(a, unit)?;
    }
    Ok(())
}

/// RabbitMQ on `n` reports exactly `expect` (node names) running.
pub fn rabbit_running(n: &Node, expect: &[&str]) -> Result<Vec<String>> {
    let ran = n.exec_for(
        &["rabbitmqctl", "cluster_status", "--formatter", "json"],
        Duration::from_secs(20),
    )?;
    let out = ran
        .into_stdout()
        .with_context(|| format!("on {}", n.name))?;
    let running = parse::rabbit_running_nodes(&out)?;
    let want: BTreeSet<String> = expect.iter().map(|h| format!("rabbit@{h}")).collect();
    let got: BTreeSet<String> = running.iter().cloned().collect();
    ensure!(
        got == want,
        "{}: RabbitMQ running nodes {got:?}, want {want:?}",
        n.name
    );
    Ok(running)
}

/// Virtual host `vhost` runs on exactly the nodes `expect` (short
/// hostnames). A node that joins its peer while the peer is still importing
/// the definitions could miss starting a virtual host created in between
/// (its AMQP clients then get "vhost / is down"); cluster_status would not
/// show that.
pub fn rabbit_vhost_running(n: &Node, vhost: &str, expect: &[&str]) -> Result<()> {
    let ran = n.exec_for(
        &[
            "rabbitmqctl",
            "-q",
            "list_vhosts",
            "name",
            "cluster_state",
            "--formatter",
            "json",
        ],
        Duration::from_secs(20),
    )?;
    let out = ran
        .into_stdout()
        .with_context(|| format!("on {}", n.name))?;
    let states = parse::rabbit_vhost_states(&out, vhost)?;
    let running: BTreeSet<String> = states
        .iter()
        .filter(|(_, st)| st == "running")
        .map(|(node, _)| node.clone())
        .collect();
    let want: BTreeSet<String> = expect.iter().map(|h| format!("rabbit@{h}")).collect();
    ensure!(
        running == want,
        "{}: RabbitMQ virtual host `{vhost}` states {states:?}, want running on {want:?}",
        n.name
    );
    Ok(())
}

/// The hard open-files limit this process (and so every node nspawn
/// starts) has; containers cannot raise it without CAP_SYS_RESOURCE.
pub fn host_nofile_hard() -> Result<u64> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    Ok(parse::open_files_limits(&limits)?.1)
}

/// memcached's connection limit in the image (seed 000: `-c 65535`, and
/// LimitNOFILE one above it).
pub const IMAGE_MAXCONNS: u64 = 65535;

/// What memcached runs with on the nodes here: the image's settings, or —
/// where this host's hard RLIMIT_NOFILE is below them (nspawn cannot raise
/// it without CAP_SYS_RESOURCE, and memcached exits "failed to set rlimit
/// for open files") — the largest that fit, set by [`fit_memcached`] in the
/// node's root before boot. The image is never changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemcachedLimits {
    pub maxconns: u64,
    pub nofile: u64,
    /// Lowered from the image's for this host.
    pub lowered: bool,
}

impl MemcachedLimits {
    pub fn for_host(host_hard: u64) -> Self {
        if host_hard > IMAGE_MAXCONNS {
            MemcachedLimits {
                maxconns: IMAGE_MAXCONNS,
                nofile: IMAGE_MAXCONNS + 1,
                lowered: false,
            }
        } else {
            MemcachedLimits {
                maxconns: host_hard - 1,
                nofile: host_hard,
                lowered: true,
            }
        }
    }
}

/// The drop-in that makes memcached fit `l` (only when lowered): the unit's
/// LimitNOFILE, and `-c` rewritten into a copy of first boot's
/// /etc/memcached.conf under /run, which the wrapper then reads.
pub fn memcached_dropin(l: &MemcachedLimits) -> String {
    format!(
        "# nib e2e harness, not the image: this host's hard RLIMIT_NOFILE is below\n\
         # memcached's -c {IMAGE_MAXCONNS}, so it runs with -c {c} here.\n\
         [Service]\n\
         LimitNOFILE={n}\n\
         ExecStartPre=/bin/sh -c 'sed \"s/^-c .*/-c {c}/\" /etc/memcached.conf >/run/nib-e2e-memcached.conf'\n\
         ExecStart=\n\
         ExecStart=/usr/share/memcached/scripts/systemd-memcached-wrapper /run/nib-e2e-memcached.conf\n",
        c = l.maxconns,
        n = l.nofile
    )
}

/// Write [`memcached_dropin`] into a node's root (before boot) when `l` is
/// lowered; sorts after first boot's nib-limits.conf.
pub fn fit_memcached(root: &Path, l: &MemcachedLimits) -> Result<()> {
    if !l.lowered {
        return Ok(());
    }
    let dir = root.join("etc/systemd/system/memcached.service.d");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let p = dir.join("zz-nib-e2e.conf");
    std::fs::write(&p, memcached_dropin(l)).with_context(|| format!("writing {}", p.display()))
}

/// memcached listens on the node's cluster address (seed 000), runs with
/// `want`'s limits (the image's `-c` and first boot's -l in its config), and
/// answers a set and a get from the client namespace with a real client
/// (libmemcached-tools' memccp/memccat).
pub fn memcached(n: &Node, want: &MemcachedLimits, client: &Netns, scratch: &Path) -> Result<u64> {
    let conf = n.exec(&["cat", "/etc/memcached.conf"])?;
    let lines: Vec<&str> = conf.lines().map(str::trim).collect();
    let listen = format!("-l {}", n.address);
    let image_c = format!("-c {IMAGE_MAXCONNS}");
    ensure!(
        lines.contains(&listen.as_str()) && lines.contains(&image_c.as_str()),
        "{}: /etc/memcached.conf lacks `{listen}` or `{image_c}`",
        n.name
    );
    let ss = n.exec(&["ss", "-Hltn", "sport = :11211"])?;
    let listening = parse::ss_listen(&ss);
    let addr = format!("{}:11211", n.address);
    ensure!(
        listening.contains(&addr),
        "{}: memcached listens on {listening:?}, want {addr}",
        n.name
    );
    let pid = n
        .exec(&[
            "systemctl",
            "show",
            "-p",
            "MainPID",
            "--value",
            "memcached.service",
        ])?
        .trim()
        .to_string();
    ensure!(
        !pid.is_empty() && pid != "0",
        "{}: memcached.service has no main PID",
        n.name
    );
    let limits = n.exec(&["cat", &format!("/proc/{pid}/limits")])?;
    let nofile = parse::max_open_files(&limits)?;
    ensure!(
        nofile >= want.maxconns,
        "{}: memcached (pid {pid}) open-files limit {nofile} < -c {}",
        n.name,
        want.maxconns
    );
    // memccp stores a file under its basename; memccat prints it back.
    let key = format!("nib-e2e-{}", n.name);
    let value = format!("set from the client netns at {:.3}", crate::host_uptime());
    let file = scratch.join(&key);
    std::fs::write(&file, &value).with_context(|| format!("writing {}", file.display()))?;
    let servers = format!("--servers={addr}");
    let file_arg = file.to_string_lossy().into_owned();
    Cmd::new("ip")
        .args([
            "netns",
            "exec",
            client.name(),
            "memccp",
            "--set",
            &servers,
            &file_arg,
        ])
        .timeout(SHORT)
        .unlogged()
        .stdout_text()
        .with_context(|| format!("{}: memcached set from the client netns", n.name))?;
    let got = Cmd::new("ip")
        .args(["netns", "exec", client.name(), "memccat", &servers, &key])
        .timeout(SHORT)
        .unlogged()
        .stdout_text()
        .with_context(|| format!("{}: memcached get from the client netns", n.name))?;
    ensure!(
        got.trim_end() == value,
        "{}: memcached get {key} answered {got:?}, set {value:?}",
        n.name
    );
    Ok(nofile)
}

/// SQL as root over the node's local socket, on stdin (the suite's user
/// is created with a password).
pub fn sql(n: &Node, sql: &str) -> Result<String> {
    n.exec_input(
        &["mariadb", "--batch", "--skip-column-names"],
        Some(sql),
        SHORT,
    )?
    .into_stdout()
    .with_context(|| format!("SQL on {}", n.name))
}

/// The node's replica threads; `None` when it is not a replica.
pub fn replica_status(n: &Node) -> Result<Option<Vec<(String, String)>>> {
    let ran = n.exec_for(&["mariadb", "--batch", "-e", "SHOW SLAVE STATUS\\G"], SHORT)?;
    let out = ran
        .into_stdout()
        .with_context(|| format!("SQL on {}", n.name))?;
    let kv = parse::slave_status(&out);
    Ok((!kv.is_empty()).then_some(kv))
}

/// `n` replicates from `primary` (by name, as the resource agent sets it,
/// or by address) with both threads running.
pub fn replicating(n: &Node, primary: &Node) -> Result<()> {
    let primary_addr = primary.address.as_str();
    let Some(kv) = replica_status(n)? else {
        bail!(
            "{}: MariaDB is not a replica (no SHOW SLAVE STATUS)",
            n.name
        );
    };
    let io = parse::field(&kv, "Slave_IO_Running").unwrap_or("?");
    let sql = parse::field(&kv, "Slave_SQL_Running").unwrap_or("?");
    let host = parse::field(&kv, "Master_Host").unwrap_or("?");
    ensure!(
        io == "Yes" && sql == "Yes" && (host == primary_addr || host == primary.name),
        "{}: replication IO={io} SQL={sql} from {host} (want Yes/Yes from {} or {primary_addr}); last errors: IO `{}` SQL `{}`",
        n.name,
        primary.name,
        parse::field(&kv, "Last_IO_Error").unwrap_or(""),
        parse::field(&kv, "Last_SQL_Error").unwrap_or("")
    );
    Ok(())
}

/// Where pacemaker runs the MariaDB primary, as `n` sees the cluster.
pub fn promoted_nodes(n: &Node) -> Result<Vec<String>> {
    let xml = n
        .exec_for(&["crm_mon", "-1", "--output-as=xml"], SHORT)?
        .into_stdout()
        .with_context(|| format!("crm_mon on {}", n.name))?;
    Ok(parse::promoted_db_nodes(&xml))
}

/// Open a TCP connection to `addr` from inside network namespace `netns`
/// (a thread joins it; the rest of the process stays in the host's).
pub fn connect_from<T: Send + 'static>(
    netns: &Path,
    addr: SocketAddr,
    timeout: Duration,
    then: impl FnOnce(TcpStream) -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = netns.to_path_buf();
    std::thread::spawn(move || -> Result<T> {
        let f = std::fs::File::open(&ns).with_context(|| format!("opening {}", ns.display()))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("joining {}", ns.display()))?;
        let s = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        then(s)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
}

/// An AMQP 0-9-1 broker answers at `addr`: the protocol header is met with
/// `Connection.Start` (class 10, method 10) on channel 0.
pub fn amqp_serves(client_netns: &Path, addr: SocketAddr) -> Result<()> {
    amqp_serves_within(client_netns, addr, Duration::from_secs(3))
}

/// [`amqp_serves`] with its own connect/read timeout (a poll loop must not
/// stall on a node whose address is not up yet).
pub fn amqp_serves_within(client_netns: &Path, addr: SocketAddr, timeout: Duration) -> Result<()> {
    connect_from(client_netns, addr, timeout, move |mut s| {
        s.write_all(b"AMQP\x00\x00\x09\x01")?;
        let mut hdr = [0u8; 11];
        s.read_exact(&mut hdr)
            .with_context(|| format!("reading the broker's first frame from {addr}"))?;
        ensure!(
            hdr[0] == 1 && hdr[1..3] == [0, 0] && hdr[7..11] == [0, 10, 0, 10],
            "{addr} answered {hdr:02x?}, not AMQP Connection.Start"
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcached_keeps_the_images_limits_where_the_host_allows_them() {
        let l = MemcachedLimits::for_host(524288);
        assert_eq!((l.maxconns, l.nofile, l.lowered), (65535, 65536, false));
        let dir = tempfile::tempdir().expect("tmp");
        fit_memcached(dir.path(), &l).expect("fit");
        assert!(!dir.path().join("etc").exists(), "nothing written");
    }

    #[test]
    fn memcached_is_lowered_below_a_low_hard_limit_in_the_nodes_root_only() {
        let l = MemcachedLimits::for_host(20000);
        assert_eq!((l.maxconns, l.nofile, l.lowered), (19999, 20000, true));
        let dir = tempfile::tempdir().expect("tmp");
        fit_memcached(dir.path(), &l).expect("fit");
        let d = std::fs::read_to_string(
            dir.path()
                .join("etc/systemd/system/memcached.service.d/zz-nib-e2e.conf"),
        )
        .expect("drop-in");
        assert!(d.contains("\nLimitNOFILE=20000\n"), "{d}");
        assert!(
            d.contains(r#"sed "s/^-c .*/-c 19999/" /etc/memcached.conf"#),
            "{d}"
        );
        assert!(d.contains("\nExecStart=\nExecStart=/usr/share/memcached/scripts/systemd-memcached-wrapper /run/nib-e2e-memcached.conf\n"), "{d}");
    }
}
