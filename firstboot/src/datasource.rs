//! The NoCloud datasource as cloud-init defines it: `meta-data`
//! (`instance-id`, `local-hostname`), `user-data`, optional `network-config`,
//! found (in this order) via the kernel command line `ds=nocloud;s=…/`
//! (`file://` or `http://`), `/var/lib/cloud/seed/nocloud{,-net}/`, or a
//! vfat/iso9660 volume labelled `CIDATA`/`cidata` (mounted read-only,
//! unmounted after).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::role::{Role, RoleData};
use nib_host::Cmd;

use crate::log;

/// A NoCloud seed, read into memory.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed {
    pub instance_id: String,
    pub local_hostname: Option<String>,
    /// The raw user-data (holds secrets: never print it).
    pub user_data: String,
    pub network_config: Option<String>,
    /// Where it came from, for logs (`/dev/vdb`, `http://…/`, a directory).
    pub origin: String,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("instance_id", &self.instance_id)
            .field("local_hostname", &self.local_hostname)
            .field(
                "user_data",
                &format_args!("<{} bytes>", self.user_data.len()),
            )
            .field("origin", &self.origin)
            .finish()
    }
}

/// Seed problems that are the input's fault (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("no NoCloud seed found (looked at: {0})")]
    NotFound(String),
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

fn invalid(origin: &str, message: impl Into<String>) -> anyhow::Error {
    SeedError::Invalid {
        origin: origin.to_string(),
        message: message.into(),
    }
    .into()
}

/// Parse `meta-data` (YAML, or its JSON subset). Only `instance-id` and
/// `local-hostname` matter; cloud-init's other keys are ignored as it does.
pub fn parse_meta_data(text: &str, origin: &str) -> Result<(String, Option<String>)> {
    let map: BTreeMap<String, serde_yaml::Value> = if text.trim().is_empty() {
        BTreeMap::new()
    } else {
        serde_yaml::from_str(text)
            .map_err(|e| invalid(origin, format!("meta-data is not YAML: {e}")))?
    };
    let get = |k: &str| -> Result<Option<String>> {
        match map.get(k) {
            None | Some(serde_yaml::Value::Null) => Ok(None),
            Some(serde_yaml::Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(serde_yaml::Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(invalid(
                origin,
                format!("meta-data key `{k}`: must be a string"),
            )),
        }
    };
    let iid = get("instance-id")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(origin, "meta-data key `instance-id`: missing"))?;
    if iid.len() > 255 || !iid.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            origin,
            "meta-data key `instance-id`: must be 1–255 printable characters without spaces",
        ));
    }
    Ok((iid, get("local-hostname")?))
}

/// Read a seed from a directory (`--seed DIR`, a mounted volume, a seed dir).
pub fn load_dir(dir: &Path) -> Result<Seed> {
    let origin = dir.display().to_string();
    let read = |name: &str| -> Result<Option<String>> {
        match fs::read(dir.join(name)) {
            Ok(b) => {
                Ok(Some(String::from_utf8(b).map_err(|_| {
                    invalid(&origin, format!("{name} is not UTF-8"))
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", dir.join(name).display())),
        }
    };
    let meta = read("meta-data")?.ok_or_else(|| invalid(&origin, "meta-data: missing"))?;
    let user = read("user-data")?.ok_or_else(|| invalid(&origin, "user-data: missing"))?;
    let net = read("network-config")?;
    from_parts(&meta, user, net, origin)
}

/// Parse and validate a seed's user-data (and network-config's syntax):
/// the role data as given, and as this node (meta-data's
/// `local-hostname`, or cloud-config's `hostname`) reads it.
pub fn parse_seed(seed: &Seed) -> Result<(RoleData, Role)> {
    let src = format!("{}/user-data", seed.origin.trim_end_matches('/'));
    let rd = RoleData::parse(&seed.user_data, &src)?;
    let role = rd.validate(seed.local_hostname.as_deref(), &src)?;
    if let Some(nc) = &seed.network_config {
        serde_yaml::from_str::<serde_yaml::Value>(nc)
            .map_err(|e| invalid(&seed.origin, format!("network-config is not YAML: {e}")))?;
        log::info("network-config present; nib configures the cluster interface from the role data's [network]");
    }
    for k in &rd.ignored_keys {
        log::info(&format!(
            "user-data: cloud-config key `{k}` is not used by nib"
        ));
    }
    Ok((rd, role))
}

fn from_parts(
    meta: &str,
    user_data: String,
    network_config: Option<String>,
    origin: String,
) -> Result<Seed> {
    let (instance_id, local_hostname) = parse_meta_data(meta, &origin)?;
    Ok(Seed {
        instance_id,
        local_hostname,
        user_data,
        network_config,
        origin,
    })
}

/// The seed URL from a kernel command line: `ds=nocloud;s=URL` (also
/// `nocloud-net` and `seedfrom=`), as cloud-init parses it.
pub fn seed_url_from_cmdline(cmdline: &str) -> Option<String> {
    for word in cmdline.split_whitespace() {
        let Some(v) = word.strip_prefix("ds=") else {
            continue;
        };
        let mut parts = v.split(';');
        let ds = parts.next().unwrap_or("");
        if !ds.eq_ignore_ascii_case("nocloud") && !ds.eq_ignore_ascii_case("nocloud-net") {
            continue;
        }
        for p in parts {
            if let Some(url) = p.strip_prefix("s=").or_else(|| p.strip_prefix("seedfrom=")) {
                return Some(url.to_string());
            }
        }
    }
    None
}

/// Fetch a seed from a `file://` or `http://` URL (a directory; cloud-init
/// appends the file names to it).
pub fn load_url(url: &str) -> Result<Seed> {
    if let Some(path) = url.strip_prefix("file://") {
        return load_dir(Path::new(path));
    }
    if url.starts_with("http://") {
        let base = if url.ends_with('/') {
            url.to_string()
        } else {
            format!("{url}/")
        };
        let meta = http_get(&format!("{base}meta-data"))?
            .ok_or_else(|| invalid(&base, "meta-data: 404"))?;
        let user = http_get(&format!("{base}user-data"))?
            .ok_or_else(|| invalid(&base, "user-data: 404"))?;
        let net = http_get(&format!("{base}network-config"))?;
        let s = |b: Vec<u8>, n: &str| {
            String::from_utf8(b).map_err(|_| invalid(&base, format!("{n} is not UTF-8")))
        };
        return from_parts(
            &s(meta, "meta-data")?,
            s(user, "user-data")?,
            net.map(|b| s(b, "network-config")).transpose()?,
            base.clone(),
        );
    }
    Err(invalid(
        url,
        "seed URL must be file:// or http:// (https needs a TLS stack the node does not carry)",
    ))
}

/// A minimal HTTP/1.0 GET: `Ok(None)` on 404. Retries connection failures for
/// up to 30 s (a PXE node's network may still be settling).
pub fn http_get(url: &str) -> Result<Option<Vec<u8>>> {
    let rest = url.strip_prefix("http://").context("not an http:// URL")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let has_port = match hostport.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => hostport.contains(':'),
    };
    let addr_s = if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = (|| -> Result<Option<Vec<u8>>> {
            let addr = addr_s
                .to_socket_addrs()
                .with_context(|| format!("resolving {addr_s}"))?
                .next()
                .with_context(|| format!("{addr_s}: no address"))?;
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .with_context(|| format!("connecting to {addr}"))?;
            s.set_read_timeout(Some(Duration::from_secs(15)))?;
            let req = format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\nUser-Agent: nib-firstboot\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes())?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)
                .with_context(|| format!("reading {url}"))?;
            let end = buf
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .with_context(|| format!("{url}: malformed HTTP response"))?;
            let head = String::from_utf8_lossy(&buf[..end]);
            let status: u16 = head
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("{url}: malformed status line"))?;
            match status {
                200 => Ok(Some(buf[end + 4..].to_vec())),
                404 => Ok(None),
                other => bail!("{url}: HTTP {other}"),
            }
        })();
        match attempt {
            Ok(r) => return Ok(r),
            Err(e) if Instant::now() < deadline && e.chain().any(|c| c.is::<std::io::Error>()) => {
                log::info(&format!("{url}: {e:#}; retrying"));
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Block devices whose filesystem label is CIDATA or cidata.
pub fn cidata_devices() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for label in ["CIDATA", "cidata"] {
        let p = Path::new("/dev/disk/by-label").join(label);
        if let Ok(real) = fs::canonicalize(&p) {
            if !found.contains(&real) {
                found.push(real);
            }
        }
    }
    if found.is_empty() {
        // udev may not have run yet this early in boot; blkid probes directly.
        for label in ["CIDATA", "cidata"] {
            if let Ok(out) = Cmd::new("blkid")
                .args([
                    "-c",
                    "/dev/null",
                    "-o",
                    "device",
                    "-t",
                    &format!("LABEL={label}"),
                ])
                .output()
            {
                for l in String::from_utf8_lossy(&out.stdout).lines() {
                    let p = PathBuf::from(l.trim());
                    if !l.trim().is_empty() && !found.contains(&p) {
                        found.push(p);
                    }
                }
            }
        }
    }
    found
}

/// Unmounts and removes the mount point when dropped.
struct MountGuard {
    dir: PathBuf,
    mounted: bool,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = Cmd::new("umount").arg(&self.dir).output() {
                log::warn(&format!("{e:#}"));
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Mount `dev` read-only (vfat or iso9660), read the seed, unmount. When
/// the kernel has neither filesystem (some VM kernels), read the volume in
/// user space instead (mtools for vfat, isoinfo for iso9660), read-only.
pub fn load_volume(dev: &Path) -> Result<Seed> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "nib-cidata.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut guard = MountGuard {
        dir: dir.clone(),
        mounted: false,
    };
    let mut errors = Vec::new();
    for fstype in ["vfat", "iso9660"] {
        match Cmd::new("mount")
            .args(["-o", "ro,nodev,nosuid,noexec", "-t", fstype])
            .arg(dev)
            .arg(&dir)
            .output()
        {
            Ok(_) => {
                guard.mounted = true;
                break;
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !guard.mounted {
        if errors.iter().all(|e| e.contains("unknown filesystem type")) {
            log::info("the kernel cannot mount vfat/iso9660; reading the volume in user space");
            let mut seed = read_volume_userspace(dev, &dir)?;
            seed.origin = dev.display().to_string();
            return Ok(seed);
        }
        bail!(
            "mounting {} read-only: {}",
            dev.display(),
            errors.join("; ")
        );
    }
    let mut seed = load_dir(&dir)?;
    seed.origin = dev.display().to_string();
    drop(guard);
    Ok(seed)
}

/// Copy the seed files out of a vfat or iso9660 volume without mounting it.
fn read_volume_userspace(dev: &Path, scratch: &Path) -> Result<Seed> {
    let out = Cmd::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(dev)
        .output()?;
    let fstype = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let names = ["meta-data", "user-data", "network-config"];
    match fstype.as_str() {
        "vfat" => {
            let out = Cmd::new("mdir")
                .args(["-b", "-i"])
                .arg(dev)
                .arg("::/")
                .env("MTOOLS_SKIP_CHECK", "1")
                .output()?;
            let listing = String::from_utf8_lossy(&out.stdout).to_lowercase();
            for name in names {
                if listing
                    .lines()
                    .any(|l| l.trim_end_matches('/').ends_with(&format!("/{name}")))
                {
                    Cmd::new("mcopy")
                        .args(["-n", "-i"])
                        .arg(dev)
                        .arg(format!("::/{name}"))
                        .arg(scratch.join(name))
                        .env("MTOOLS_SKIP_CHECK", "1")
                        .output()?;
                }
            }
        }
        "iso9660" => {
            let out = Cmd::new("isoinfo")
                .args(["-R", "-f", "-i"])
                .arg(dev)
                .output()?;
            let listing = String::from_utf8_lossy(&out.stdout).to_string();
            for name in names {
                if listing.lines().any(|l| l.trim() == format!("/{name}")) {
                    let out = Cmd::new("isoinfo")
                        .args(["-R", "-i"])
                        .arg(dev)
                        .arg("-x")
                        .arg(format!("/{name}"))
                        .secret_stdout()
                        .output()?;
                    fs::write(scratch.join(name), &out.stdout)
                        .with_context(|| format!("writing {}", scratch.join(name).display()))?;
                }
            }
        }
        other => bail!(
            "{}: filesystem {other:?} is neither vfat nor iso9660",
            dev.display()
        ),
    }
    let seed = load_dir(scratch);
    for name in names {
        let _ = fs::remove_file(scratch.join(name));
    }
    seed
}

/// Find the seed the way cloud-init's NoCloud does. `root` is the target
/// root: the kernel command line and block devices are only consulted when
/// it is `/` (the running node); the seed directories are read under it.
pub fn find(root: &Path, cmdline: Option<&str>) -> Result<Seed> {
    let live = root == Path::new("/");
    let mut looked = Vec::new();
    if live {
        if let Some(url) = cmdline.and_then(seed_url_from_cmdline) {
            log::info(&format!("seed from the kernel command line: {url}"));
            return load_url(&url);
        }
        looked.push("kernel command line".to_string());
    }
    for d in [
        "var/lib/cloud/seed/nocloud",
        "var/lib/cloud/seed/nocloud-net",
    ] {
        let p = root.join(d);
        if p.join("meta-data").exists() {
            log::info(&format!("seed directory {}", p.display()));
            return load_dir(&p);
        }
        looked.push(p.display().to_string());
    }
    if live {
        if let Some(dev) = cidata_devices().first() {
            log::info(&format!("seed volume {}", dev.display()));
            return load_volume(dev);
        }
        looked.push("volumes labelled CIDATA/cidata".to_string());
    }
    Err(SeedError::NotFound(looked.join(", ")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_forms() {
        assert_eq!(
            seed_url_from_cmdline("quiet ds=nocloud;s=file:///seed/ ro").as_deref(),
            Some("file:///seed/")
        );
        assert_eq!(
            seed_url_from_cmdline("ds=nocloud-net;s=http://198.18.0.1:8000/n1/").as_deref(),
            Some("http://198.18.0.1:8000/n1/")
        );
        assert_eq!(
            seed_url_from_cmdline("ds=nocloud;h=x;seedfrom=http://a/").as_deref(),
            Some("http://a/")
        );
        assert_eq!(seed_url_from_cmdline("ds=ec2 root=/dev/sda"), None);
    }

    #[test]
    fn meta_data_yaml_and_json() {
        let (i, h) = parse_meta_data("instance-id: iid-1\nlocal-hostname: controller01\n", "x")
            .expect("yaml");
        assert_eq!((i.as_str(), h.as_deref()), ("iid-1", Some("controller01")));
        let (i, h) = parse_meta_data("{\"instance-id\": \"iid-2\"}", "x").expect("json");
        assert_eq!((i.as_str(), h), ("iid-2", None));
        assert!(parse_meta_data("local-hostname: a\n", "x").is_err());
    }

    #[test]
    fn http_seed_with_404_network_config() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            for _ in 0..3 {
                let (mut s, _) = l.accept().expect("accept");
                let mut req = String::new();
                let mut buf = [0u8; 1024];
                while !req.contains("\r\n\r\n") {
                    let n = s.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    req.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let body = match path.as_str() {
                    "/n1/meta-data" => {
                        Some("instance-id: iid-http\nlocal-hostname: controller02\n")
                    }
                    "/n1/user-data" => Some("#cloud-config\n"),
                    _ => None,
                };
                let resp = match body {
                    Some(b) => format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{b}", b.len()),
                    None => "HTTP/1.0 404 Not Found\r\n\r\n".to_string(),
                };
                s.write_all(resp.as_bytes()).expect("write");
            }
        });
        let seed = load_url(&format!("http://127.0.0.1:{port}/n1/")).expect("http seed");
        server.join().expect("server");
        assert_eq!(seed.instance_id, "iid-http");
        assert_eq!(seed.local_hostname.as_deref(), Some("controller02"));
        assert_eq!(seed.user_data, "#cloud-config\n");
        assert_eq!(seed.network_config, None);
    }
}
