//! Physical re-seed of a replica from the primary (issue 18,
//! firstboot/doc/HA.md "Replacing a node").
//!
//! A replica that cannot replicate (empty, behind the primary's purged
//! binary logs, or diverged) gets a copy of the primary's datadir:
//! `mariabackup --backup --stream=xbstream` on the primary, over the
//! cluster network, unpacked with `mbstream -x` and prepared with
//! `mariabackup --prepare` on the replica, swapped in for its datadir with
//! one `renameat2(RENAME_EXCHANGE)`; replication then starts at the copy's
//! GTID (ocf:nib:mariadb does that). The primary keeps serving: mariabackup
//! holds its commit lock only for the last moment of the copy.
//!
//! Every controller runs the donor (`nib-firstboot reseed-donor`,
//! nib-reseed-donor.service) on its cluster address, port [`PORT`]. It
//! answers the peer's address only, and only while its own MariaDB is the
//! writable primary. Both ends prove they know a key derived from
//! `secrets.mariadb_replication_password` of the cluster file (HMAC-SHA256
//! challenge and response in both directions, fresh nonces); the stream is
//! then authenticated as a whole with a session key from both nonces, so a
//! copy that was cut short or altered is refused before it replaces
//! anything. mariabackup reaches the donor's MariaDB as root over the local
//! socket (unix_socket authentication): no password on any command line or
//! in any file the donor writes. The stream is not encrypted (nor is
//! replication on the cluster network).

use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use nib_host::cmd::Cmd;
use nib_host::log;
use sha2::Sha256;

use crate::fsutil;
use crate::role::pair::Pair;
use crate::seed::random_bytes;

/// The donor's TCP port on the cluster address (Galera's SST port).
pub const PORT: u16 = 4444;
const MAGIC: &[u8; 8] = b"NIBRSD1\n";
const NONCE: usize = 32;
const TAG: usize = 32;
const CHUNK: usize = 1 << 20;
/// Frames of the stream: data, and the end (status, message, MAC).
const FRAME_DATA: u8 = b'D';
const FRAME_END: u8 = b'E';
/// A handshake that does not finish in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer that takes no data (or sends none) for this long is gone.
const STREAM_TIMEOUT: Duration = Duration::from_secs(120);

type HmacSha256 = Hmac<Sha256>;

/// This node's MariaDB as mariabackup reaches it.
#[derive(Debug, Clone)]
pub struct Server {
    /// Its configuration (`--defaults-file`).
    pub config: PathBuf,
    /// Its socket (root over unix_socket authentication).
    pub socket: PathBuf,
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m
}

/// The re-seed key: derived from the replication password, so the password
/// itself never goes into the handshake.
fn pair_key(pair: &Pair) -> [u8; 32] {
    mac(
        pair.secrets
            .mariadb_replication_password
            .expose()
            .as_bytes(),
        &[b"nib re-seed key v1"],
    )
    .finalize()
    .into_bytes()
    .into()
}

fn nonce() -> Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    n.copy_from_slice(&random_bytes(NONCE)?);
    Ok(n)
}

fn read_exact<const N: usize>(r: &mut impl Read, what: &str) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)
        .with_context(|| format!("reading {what}"))?;
    Ok(b)
}

/// The two ends' proofs and the stream's session key, from the key and
/// both nonces.
struct Handshake<'a> {
    key: &'a [u8],
    donor: [u8; NONCE],
    joiner: [u8; NONCE],
}

impl Handshake<'_> {
    fn mac(&self, label: &[u8]) -> HmacSha256 {
        mac(self.key, &[label, &self.donor, &self.joiner])
    }

    /// The proof the end named by `label` (joiner, donor) sends.
    fn tag(&self, label: &[u8]) -> [u8; TAG] {
        self.mac(label).finalize().into_bytes().into()
    }

    /// Whether `proof` is that end's (compared in constant time).
    fn proves(&self, label: &[u8], proof: &[u8]) -> bool {
        self.mac(label).verify_slice(proof).is_ok()
    }

    fn session(&self) -> [u8; 32] {
        self.tag(b"stream")
    }
}

// --- the donor ----------------------------------------------------------

/// `nib-firstboot reseed-donor`: serve re-seeds to the peer, one at a time,
/// until killed. Binding waits for this node's cluster address (networkd
/// may not have it up yet).
pub fn donor_command(pair: &Pair, node: &str, server: &Server) -> Result<()> {
    let me = pair
        .node(node)
        .with_context(|| format!("this node {node} is not in the role data"))?;
    let peer = pair
        .nodes
        .iter()
        .find(|n| n.name != node)
        .context("the role data has no peer")?;
    let key = pair_key(pair);
    let addr = SocketAddr::new(me.address, PORT);
    let listener = bind_when_up(addr)?;
    log::info(&format!(
        "re-seed donor listening on {addr} for {} ({})",
        peer.name, peer.address
    ));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn(&format!("re-seed donor: accept: {e}"));
                continue;
            }
        };
        let from = stream.peer_addr().map(|a| a.ip()).ok();
        if from != Some(peer.address) {
            log::warn(&format!(
                "re-seed donor: refused a connection from {} (only the peer {} may ask)",
                from.map_or("?".into(), |a| a.to_string()),
                peer.address
            ));
            continue;
        }
        let t0 = Instant::now();
        match serve(stream, &key, server) {
            Ok(bytes) => log::info(&format!(
                "re-seed donor: streamed {bytes} bytes to {} in {:.1} s",
                peer.name,
                t0.elapsed().as_secs_f64()
            )),
            Err(e) => log::warn(&format!("re-seed donor: {}: {e:#}", peer.name)),
        }
    }
    Ok(())
}

fn bind_when_up(addr: SocketAddr) -> Result<TcpListener> {
    let mut said = false;
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            // the address is not on this node yet
            Err(e) if e.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) => {
                if !said {
                    log::info(&format!(
                        "re-seed donor: waiting for {} to come up",
                        addr.ip()
                    ));
                    said = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e).with_context(|| format!("binding {addr}")),
        }
    }
}

/// One re-seed: handshake, then mariabackup's stream in frames, then the end
/// frame with its status and the MAC of everything after the handshake.
fn serve(stream: TcpStream, key: &[u8], server: &Server) -> Result<u64> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(STREAM_TIMEOUT))?;
    let mut r = stream.try_clone()?;
    let mut w = BufWriter::with_capacity(CHUNK + 16, stream);
    let donor_nonce = nonce()?;
    w.write_all(MAGIC)?;
    w.write_all(&donor_nonce)?;
    w.flush()?;
    let magic: [u8; 8] = read_exact(&mut r, "the joiner's greeting")?;
    if &magic != MAGIC {
        bail!("not a nib re-seed client (bad greeting)");
    }
    let joiner_nonce: [u8; NONCE] = read_exact(&mut r, "the joiner's nonce")?;
    let proof: [u8; TAG] = read_exact(&mut r, "the joiner's proof")?;
    let hs = Handshake {
        key,
        donor: donor_nonce,
        joiner: joiner_nonce,
    };
    if !hs.proves(b"joiner", &proof) {
        bail!(
            "refused: the joiner does not know the cluster's re-seed key (another cluster file?)"
        );
    }
    w.write_all(&hs.tag(b"donor"))?;
    w.flush()?;
    let mut out = FrameWriter {
        w,
        mac: mac(&hs.session(), &[]),
        bytes: 0,
    };
    let datadir = match primary_datadir(server) {
        Ok(d) => d,
        Err(why) => {
            out.end(1, &why)?;
            bail!("refused: {why}");
        }
    };
    if let Err(why) = semisync_off(server) {
        out.end(1, &why)?;
        bail!("refused: {why}");
    }
    let tmp = tempfile::Builder::new()
        .prefix("nib-reseed-donor.")
        .tempdir()
        .context("making mariabackup's target dir")?;
    let stderr_path = tmp.path().join("mariabackup.log");
    let target = tmp.path().join("target");
    fs::create_dir(&target)?;
    let mut child = Cmd::new("mariabackup")
        .arg(format!("--defaults-file={}", server.config.display()))
        .arg("--backup")
        .arg("--stream=xbstream")
        .arg(format!("--datadir={datadir}"))
        .arg(format!("--target-dir={}", target.display()))
        .arg("--user=root")
        .arg(format!("--socket={}", server.socket.display()))
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&stderr_path)?)
        .spawn()?;
    let mut src = child.stdout.take().context("mariabackup's stdout")?;
    let mut buf = vec![0u8; CHUNK];
    let copied = loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(anyhow::Error::from(e).context("reading mariabackup's stream")),
        };
        if let Err(e) = out.data(&buf[..n]) {
            break Err(e.context("sending to the joiner"));
        }
    };
    if copied.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    copied?;
    if !status.success() {
        let why = format!(
            "mariabackup --backup failed ({status}): {}",
            last_line(&fs::read_to_string(&stderr_path).unwrap_or_default())
        );
        out.end(status.code().unwrap_or(-1), &why)?;
        bail!("{why}");
    }
    let bytes = out.bytes;
    out.end(0, "")?;
    Ok(bytes)
}

/// The primary stops waiting for the peer's ACK: the peer is being re-seeded
/// and cannot send one until it replicates. Under semi-sync every commit
/// (and so the primary's clients) would wait for the whole copy, and a
/// commit waiting for an ACK holds the commit lock mariabackup takes at its
/// end: the copy would never finish. Until the re-seeded peer replicates,
/// an acknowledged write has one copy, as after the peer is declared gone;
/// the peer cannot be promoted meanwhile (it is starting, with no score).
/// ocf:nib:mariadb's promoted monitor turns semi-sync on again once a
/// semi-sync replica is connected.
fn semisync_off(server: &Server) -> std::result::Result<(), String> {
    let out = mysql_root(
        server,
        "SELECT @@global.rpl_semi_sync_master_enabled; SET GLOBAL rpl_semi_sync_master_enabled = OFF",
    );
    match out {
        Ok(o) if o.success() => {
            if o.stdout_str().trim() == "1" {
                log::warn("re-seed donor: semi-sync off while the peer is re-seeded (its ACKs resume when it replicates)");
            }
            Ok(())
        }
        Ok(o) => Err(format!(
            "cannot turn semi-sync off for the copy: {}",
            o.failure()
        )),
        Err(e) => Err(format!("cannot turn semi-sync off for the copy: {e}")),
    }
}

/// SQL as root on this node's MariaDB (its socket, unix_socket authentication).
fn mysql_root(server: &Server, sql: &str) -> Result<nib_host::cmd::Output, nib_host::cmd::Error> {
    Cmd::new("mariadb")
        .args(["--no-defaults", "-u", "root", "-N", "-B"])
        .arg(format!("--socket={}", server.socket.display()))
        .args(["-e", sql])
        .timeout(Duration::from_secs(10))
        .output_unchecked()
}

/// The datadir of this node's MariaDB when it is the writable primary;
/// else why this node must not donate.
fn primary_datadir(server: &Server) -> std::result::Result<String, String> {
    match mysql_root(server, "SELECT @@global.read_only, @@global.datadir") {
        Ok(o) if o.success() => {
            let text = o.stdout_str();
            match text.trim().split_once('\t') {
                Some(("0", datadir)) => Ok(datadir.to_string()),
                Some(_) => Err("this node's MariaDB is read-only (not the primary)".into()),
                None => Err(format!("this node's MariaDB answered {text:?}")),
            }
        }
        Ok(o) => Err(format!(
            "this node's MariaDB does not answer: {}",
            o.failure()
        )),
        Err(e) => Err(format!("this node's MariaDB does not answer: {e}")),
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .to_string()
}

struct FrameWriter<W: Write> {
    w: W,
    mac: HmacSha256,
    bytes: u64,
}

impl<W: Write> FrameWriter<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.mac.update(b);
        self.w.write_all(b)?;
        Ok(())
    }

    fn data(&mut self, data: &[u8]) -> Result<()> {
        self.put(&[FRAME_DATA])?;
        self.put(&(data.len() as u32).to_be_bytes())?;
        self.put(data)?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// The end frame and the MAC; hands the writer back.
    fn end(mut self, status: i32, message: &str) -> Result<W> {
        let msg = message.as_bytes();
        self.put(&[FRAME_END])?;
        self.put(&status.to_be_bytes())?;
        self.put(&(msg.len() as u32).to_be_bytes())?;
        self.put(msg)?;
        let tag = self.mac.finalize().into_bytes();
        self.w.write_all(&tag)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

// --- the joiner ---------------------------------------------------------

/// What a re-seed did: the GTID replication starts at, and its figures.
#[derive(Debug)]
pub struct Reseeded {
    pub gtid: String,
    pub bytes: u64,
    pub stream_s: f64,
    pub prepare_s: f64,
}

/// `nib-firstboot reseed --from NODE` (ocf:nib:mariadb runs it with this
/// node's MariaDB stopped): replace this node's datadir with a prepared
/// copy of NODE's. Nothing is replaced unless the whole copy arrived, was
/// authenticated and prepared.
pub fn reseed_command(
    pair: &Pair,
    node: &str,
    from: &str,
    datadir: &Path,
    server: &Server,
) -> Result<Reseeded> {
    let donor = pair
        .nodes
        .iter()
        .find(|n| n.name == from || n.address.to_string() == from)
        .with_context(|| {
            format!(
                "--from {from}: not a node of the role data (nodes: {} {}, {} {})",
                pair.nodes[0].name,
                pair.nodes[0].address,
                pair.nodes[1].name,
                pair.nodes[1].address
            )
        })?;
    if donor.name == node {
        bail!("--from {from}: that is this node; re-seed from the peer");
    }
    let from = donor.name.as_str();
    if UnixStream::connect(&server.socket).is_ok() {
        bail!(
            "MariaDB answers on {} on this node: a re-seed replaces its datadir, stop it first",
            server.socket.display()
        );
    }
    // The copy is unpacked beside the datadir (same filesystem: the swap is
    // a rename), and after the swap holds the old datadir until removed.
    let name = datadir
        .file_name()
        .with_context(|| format!("--datadir {}: no directory name", datadir.display()))?;
    let staging = datadir.with_file_name(format!(".{}.nib-reseed", name.to_string_lossy()));
    reseed_into(
        &pair_key(pair),
        donor.address,
        from,
        datadir,
        &staging,
        server,
    )
}

fn reseed_into(
    key: &[u8],
    addr: IpAddr,
    from: &str,
    datadir: &Path,
    staging: &Path,
    server: &Server,
) -> Result<Reseeded> {
    if staging.exists() {
        fs::remove_dir_all(staging)
            .with_context(|| format!("removing the last re-seed's {}", staging.display()))?;
    }
    fs::create_dir(staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = fetch_and_prepare(key, addr, from, staging, server).and_then(|r| {
        install(datadir, staging)?;
        Ok(r)
    });
    if staging.exists() {
        if let Err(e) = fs::remove_dir_all(staging) {
            log::warn(&format!(
                "re-seed: cannot remove {}: {e}",
                staging.display()
            ));
        }
    }
    result
}

fn fetch_and_prepare(
    key: &[u8],
    addr: IpAddr,
    from: &str,
    staging: &Path,
    server: &Server,
) -> Result<Reseeded> {
    let t0 = Instant::now();
    let sa = SocketAddr::new(addr, PORT);
    let stream = TcpStream::connect_timeout(&sa, Duration::from_secs(5)).with_context(|| {
        format!("connecting to the re-seed donor on {from} ({sa}): is nib-reseed-donor.service running there?")
    })?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::with_capacity(CHUNK + 16, stream);
    let magic: [u8; 8] = read_exact(&mut r, "the donor's greeting")?;
    if &magic != MAGIC {
        bail!("{sa} is not a nib re-seed donor (bad greeting)");
    }
    let donor_nonce: [u8; NONCE] = read_exact(&mut r, "the donor's nonce")?;
    let joiner_nonce = nonce()?;
    let hs = Handshake {
        key,
        donor: donor_nonce,
        joiner: joiner_nonce,
    };
    w.write_all(MAGIC)?;
    w.write_all(&joiner_nonce)?;
    w.write_all(&hs.tag(b"joiner"))?;
    w.flush()?;
    let proof: [u8; TAG] = read_exact(&mut r, "the donor's proof").with_context(|| {
        format!("the donor on {from} closed the connection: it refused this node's proof (another cluster file?); see journalctl -u nib-reseed-donor there")
    })?;
    if !hs.proves(b"donor", &proof) {
        bail!("the donor on {from} ({sa}) does not know the cluster's re-seed key: refused");
    }
    r.get_ref().set_read_timeout(Some(STREAM_TIMEOUT))?;
    let mut child = Cmd::new("mbstream")
        .arg("-x")
        .arg("-C")
        .arg(staging)
        .stdin_piped()
        .spawn()?;
    let mut sink = child.stdin.take().context("mbstream's stdin")?;
    let received = receive(&mut r, &hs.session(), &mut sink, from);
    drop(sink);
    if received.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let bytes = received?;
    if !status.success() {
        bail!("mbstream -x failed ({status}) on the copy from {from}");
    }
    let stream_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let out = Cmd::new("mariabackup")
        .arg(format!("--defaults-file={}", server.config.display()))
        .arg("--prepare")
        .arg(format!("--target-dir={}", staging.display()))
        .output_unchecked()?;
    if !out.success() {
        bail!(
            "mariabackup --prepare of the copy from {from} failed: {}",
            last_line(&out.stderr_str())
        );
    }
    let gtid = backup_gtid(staging)?;
    Ok(Reseeded {
        gtid,
        bytes,
        stream_s,
        prepare_s: t1.elapsed().as_secs_f64(),
    })
}

/// Read frames into `sink` until the end frame; its MAC must match.
fn receive(r: &mut impl Read, session: &[u8], sink: &mut impl Write, from: &str) -> Result<u64> {
    let mut bytes = 0u64;
    let r = receive_frames(r, session, sink, from, &mut bytes);
    match r {
        Err(e) if e.downcast_ref::<std::io::Error>().is_some() => Err(e.context(format!(
            "the copy from {from} was cut short after {bytes} bytes"
        ))),
        r => r.map(|()| bytes),
    }
}

fn receive_frames(
    r: &mut impl Read,
    session: &[u8],
    sink: &mut impl Write,
    from: &str,
    bytes: &mut u64,
) -> Result<()> {
    let mut m = mac(session, &[]);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let kind: [u8; 1] = read_exact(r, "a frame")?;
        m.update(&kind);
        match kind[0] {
            FRAME_DATA => {
                let len: [u8; 4] = read_exact(r, "a frame's length")?;
                m.update(&len);
                let len = u32::from_be_bytes(len) as usize;
                if len > CHUNK {
                    bail!("the copy from {from} has a frame of {len} bytes (at most {CHUNK})");
                }
                r.read_exact(&mut buf[..len])?;
                m.update(&buf[..len]);
                sink.write_all(&buf[..len])
                    .map_err(|e| anyhow::anyhow!("writing to mbstream -x: {e}"))?;
                *bytes += len as u64;
            }
            FRAME_END => {
                let status: [u8; 4] = read_exact(r, "the end frame")?;
                let len: [u8; 4] = read_exact(r, "the end frame")?;
                m.update(&status);
                m.update(&len);
                let len = u32::from_be_bytes(len) as usize;
                if len > CHUNK {
                    bail!("the copy from {from} ends with a message of {len} bytes");
                }
                let mut msg = vec![0u8; len];
                r.read_exact(&mut msg)?;
                m.update(&msg);
                let tag: [u8; TAG] = read_exact(r, "the stream's MAC")?;
                if m.verify_slice(&tag).is_err() {
                    bail!(
                        "the copy from {from} does not authenticate (altered in transit?): refused"
                    );
                }
                let status = i32::from_be_bytes(status);
                if status != 0 {
                    bail!(
                        "the donor on {from} failed: {}",
                        String::from_utf8_lossy(&msg)
                    );
                }
                return Ok(());
            }
            other => bail!("the copy from {from} has an unknown frame type {other:#04x}"),
        }
    }
}

/// The GTID a prepared backup is at: the third field of its binlog info
/// (`mariadb_backup_binlog_info` from 10.11.?, `xtrabackup_binlog_info`
/// before). Empty when the donor had written nothing yet.
fn backup_gtid(dir: &Path) -> Result<String> {
    for name in ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"] {
        let p = dir.join(name);
        if let Ok(text) = fs::read_to_string(&p) {
            return Ok(text
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_string());
        }
    }
    bail!(
        "the copy in {} has no binlog position (neither mariadb_backup_binlog_info nor xtrabackup_binlog_info): is binary logging on at the donor?",
        dir.display()
    )
}

/// Give the prepared copy the datadir's owner and mode, sync it, and swap
/// it with the datadir in one rename (a crash leaves one or the other in
/// place, never half of each); the old datadir is then in `staging`.
fn install(datadir: &Path, staging: &Path) -> Result<()> {
    let meta = fs::metadata(datadir).with_context(|| format!("reading {}", datadir.display()))?;
    chown_tree(staging, meta.uid(), meta.gid())?;
    fs::set_permissions(staging, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    Cmd::new("sync").arg("-f").arg(staging).output()?;
    nix::fcntl::renameat2(
        None,
        staging,
        None,
        datadir,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .with_context(|| format!("swapping {} for {}", staging.display(), datadir.display()))?;
    fsutil::sync_dir(datadir.parent().context("the datadir has no parent")?)?;
    Ok(())
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    nix::unistd::chown(dir, Some(uid.into()), Some(gid.into()))
        .with_context(|| format!("chown {}", dir.display()))?;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            chown_tree(&p, uid, gid)?;
        } else {
            nix::unistd::chown(&p, Some(uid.into()), Some(gid.into()))
                .with_context(|| format!("chown {}", p.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn stream(session: &[u8], chunks: &[&[u8]], status: i32, msg: &str) -> Vec<u8> {
        let mut w = FrameWriter {
            w: Vec::new(),
            mac: mac(session, &[]),
            bytes: 0,
        };
        for c in chunks {
            w.data(c).unwrap();
        }
        w.end(status, msg).unwrap()
    }

    #[test]
    fn a_whole_stream_is_received_and_authenticated() {
        let bytes = stream(b"k", &[b"hello ", b"world"], 0, "");
        let mut sink = Vec::new();
        let n = receive(&mut Cursor::new(bytes), b"k", &mut sink, "c1").unwrap();
        assert_eq!(n, 11);
        assert_eq!(sink, b"hello world");
    }

    #[test]
    fn an_altered_or_short_or_foreign_stream_is_refused() {
        let good = stream(b"k", &[b"hello ", b"world"], 0, "");
        let mut altered = good.clone();
        altered[7] ^= 1;
        let err = receive(&mut Cursor::new(altered), b"k", &mut Vec::new(), "c1").unwrap_err();
        assert!(err.to_string().contains("does not authenticate"), "{err}");
        let short = &good[..good.len() - 40];
        let err = receive(&mut Cursor::new(short), b"k", &mut Vec::new(), "c1").unwrap_err();
        assert!(format!("{err:#}").contains("cut short"), "{err:#}");
        let err = receive(&mut Cursor::new(good), b"other", &mut Vec::new(), "c1").unwrap_err();
        assert!(err.to_string().contains("does not authenticate"), "{err}");
    }

    #[test]
    fn a_donor_failure_is_reported_with_its_reason() {
        let bytes = stream(
            b"k",
            &[b"part"],
            1,
            "this node's MariaDB is read-only (not the primary)",
        );
        let err = receive(&mut Cursor::new(bytes), b"k", &mut Vec::new(), "c1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the donor on c1 failed: this node's MariaDB is read-only (not the primary)"
        );
    }

    #[test]
    fn both_proofs_need_the_key_and_both_nonces() {
        let (d, j) = ([1u8; NONCE], [2u8; NONCE]);
        let hs = |key: &'static [u8], donor, joiner| Handshake { key, donor, joiner };
        let a = hs(b"key", d, j);
        assert!(hs(b"key", d, j).proves(b"joiner", &a.tag(b"joiner")));
        assert!(!a.proves(b"joiner", &a.tag(b"donor")));
        assert!(!hs(b"kex", d, j).proves(b"joiner", &a.tag(b"joiner")));
        assert!(!hs(b"key", j, d).proves(b"donor", &a.tag(b"donor")));
        assert_ne!(a.session(), hs(b"key", d, [3u8; NONCE]).session());
    }

    #[test]
    fn the_gtid_comes_from_either_binlog_info_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = backup_gtid(dir.path()).unwrap_err();
        assert!(err.to_string().contains("no binlog position"), "{err}");
        fs::write(
            dir.path().join("xtrabackup_binlog_info"),
            "mysql-bin.000002\t389\t0-1-42,1-2-7\n",
        )
        .unwrap();
        assert_eq!(backup_gtid(dir.path()).unwrap(), "0-1-42,1-2-7");
        fs::write(
            dir.path().join("mariadb_backup_binlog_info"),
            "mysql-bin.000001\t329\t\n",
        )
        .unwrap();
        assert_eq!(backup_gtid(dir.path()).unwrap(), "");
    }

    #[test]
    fn the_swap_keeps_the_datadir_owner_and_leaves_the_old_one_in_staging() {
        let dir = tempfile::tempdir().unwrap();
        let datadir = dir.path().join("mysql");
        let staging = dir.path().join(".mysql.nib-reseed");
        fs::create_dir(&datadir).unwrap();
        fs::write(datadir.join("old"), "old").unwrap();
        fs::set_permissions(&datadir, fs::Permissions::from_mode(0o750)).unwrap();
        fs::create_dir_all(staging.join("db")).unwrap();
        fs::write(staging.join("db/t.ibd"), "new").unwrap();
        install(&datadir, &staging).unwrap();
        assert_eq!(fs::read_to_string(datadir.join("db/t.ibd")).unwrap(), "new");
        assert_eq!(fs::metadata(&datadir).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(fs::read_to_string(staging.join("old")).unwrap(), "old");
    }
}
