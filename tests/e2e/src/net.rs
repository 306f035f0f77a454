//! Network namespaces: one `sw` with a bridge, one per node with an `eth0`
//! veth plugged into it, and a client. 198.18.0.0/24, no default route, so
//! nothing a node does can leave the machine.

use std::path::PathBuf;

use anyhow::{Context, Result};

use nib_host::Cmd;

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> Result<String> {
    Ok(Cmd::new("ip").args(args).stdout_text()?)
}

impl Netns {
    pub fn create(name: &str) -> Result<Self> {
        ip(&["netns", "add", name]).with_context(|| format!("creating netns {name}"))?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// IPv4 addresses on `dev`, as `a.b.c.d/prefix`, read from the host
    /// side (works whether or not anything runs in the namespace).
    pub fn addrs(&self, dev: &str) -> Result<Vec<String>> {
        let ran = Cmd::new("ip")
            .args(["-n", &self.name, "-4", "-o", "addr", "show", "dev", dev])
            .timeout(std::time::Duration::from_secs(10))
            .unlogged()
            .output_unchecked()?;
        Ok(crate::parse::ip_addr_show(&ran.into_stdout()?))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            crate::log(&format!("teardown: {e:#}"));
        }
    }
}

/// The switch: a namespace holding bridge `br0`; nodes plug veths into it.
#[derive(Debug)]
pub struct Switch {
    ns: Netns,
}

impl Switch {
    pub fn create(name: &str) -> Result<Self> {
        let ns = Netns::create(name)?;
        ns.ip(&["link", "add", "br0", "type", "bridge", "stp_state", "0"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Switch { ns })
    }

    /// The switch's namespace (the fault suite's nemesis filters its
    /// bridge there).
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Connect `node`'s `eth0` to the bridge through port `port`; with
    /// `addr` (CIDR) also address it and bring it up. No route besides the
    /// connected subnet.
    pub fn plug(&self, node: &Netns, port: &str, addr: Option<&str>) -> Result<()> {
        self.ns.ip(&[
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.name(),
        ])?;
        self.ns.ip(&["link", "set", port, "master", "br0", "up"])?;
        if let Some(addr) = addr {
            node.ip(&["addr", "add", addr, "dev", "eth0"])?;
            node.ip(&["link", "set", "eth0", "up"])?;
        }
        Ok(())
    }
}
