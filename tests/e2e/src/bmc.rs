//! A simulated BMC for fencing tests: OpenIPMI's `ipmi_sim` (Debian package
//! openipmi), a real IPMI 1.5/2.0 LAN server that `fence_ipmilan` and
//! `ipmitool -I lanplus` talk to unchanged, one per node, in a network
//! namespace of the test network (e.g. 198.18.0.21 for controller01's BMC,
//! plugged into the e2e switch with [`crate::net::Switch::plug`]).
//!
//! Chassis power is ipmi_sim's `chassis_control` program (lan.conf(5)
//! does not list it; OpenIPMI's lanserv runs it as `PROG set power 0|1`
//! and `PROG get power`, reading `power:N`). Ours keeps the power state in
//! a file, runs the harness's hook (see [`Bmc::set_power_hook`]) *before*
//! it answers, and appends every change to an event log that
//! [`Bmc::events`] reads. ipmi_sim waits for the program, so by the time
//! fence_ipmilan reads "off" the off hook has run: a node killed by the
//! hook is dead before pacemaker hears that fencing succeeded, as with a
//! real BMC.
//!
//! The user's password is read from a file and written only into lan.conf
//! (0600, in a 0700 directory of the BMC's own), never onto a command
//! line. The directory goes on drop, after ipmi_sim is stopped by PID.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use nib_host::Cmd;

/// The IPMI LAN port (RMCP, UDP).
pub const PORT: u16 = 623;

/// The address of `node_index`'s BMC in the test network (0 → .21).
pub fn address(node_index: usize) -> String {
    format!("198.18.0.{}", 21 + node_index)
}

/// Chassis power, as the BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    On,
    Off,
}

/// The host's realtime clock in seconds since the epoch: what
/// [`PowerEvent::at_unix_s`] is stamped with.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One change of chassis power, stamped with the host's realtime clock
/// (seconds since the epoch), as the chassis program recorded it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerEvent {
    pub power: Power,
    pub at_unix_s: f64,
}

/// One running ipmi_sim; stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Bmc {
    child: Child,
    dir: tempfile::TempDir,
    netns: String,
    addr: String,
}

/// lan.conf's strings are double-quoted with no escapes.
fn check_field(what: &str, v: &str, max: usize) -> Result<()> {
    ensure!(
        !v.is_empty() && v.len() <= max && v.chars().all(|c| c.is_ascii_graphic() && c != '"'),
        "BMC {what}: must be 1–{max} printable ASCII characters without quotes or spaces \
         (IPMI 2.0 keeps at most 20 bytes of a password)"
    );
    Ok(())
}

/// The chassis control program: `set power V` runs the hook for V, then
/// records the state and the event; `get power` prints the state.
fn chassis_script(dir: &Path) -> String {
    let d = nib_host::cmd::sh_quote(&dir.display().to_string());
    format!(
        r#"#!/bin/sh
# ipmi_sim's chassis_control program (written by nib-e2e's bmc.rs)
dir={d}
echo "$*" >> "$dir/calls"
case "$1" in
get)
    if [ -e "$dir/power-on" ]; then echo "power:1"; else echo "power:0"; fi
    ;;
set)
    shift
    while [ $# -ge 2 ]; do
        if [ "$1" = power ]; then
            if [ "$2" = 1 ]; then state=on; else state=off; fi
            if [ -x "$dir/hook-$state" ]; then "$dir/hook-$state" || exit 1; fi
            if [ $state = on ]; then : > "$dir/power-on"; else rm -f "$dir/power-on"; fi
            echo "$state $(date +%s.%N)" >> "$dir/events"
        fi
        shift 2
    done
    ;;
esac
exit 0
"#
    )
}

impl Bmc {
    /// Start a BMC on `addr` (UDP 623) inside the existing network
    /// namespace `netns`, with one administrator `user` whose password is
    /// the first line of `password_file`. Chassis power starts on, with no
    /// hook. Returns once ipmi_sim listens.
    pub fn start(netns: &str, addr: &str, user: &str, password_file: &Path) -> Result<Bmc> {
        let password = fs::read_to_string(password_file)
            .with_context(|| format!("reading {}", password_file.display()))?;
        let password = password.lines().next().unwrap_or("").to_string();
        check_field("user", user, 16)?;
        check_field(
            &format!("password in {}", password_file.display()),
            &password,
            20,
        )?;
        addr.parse::<std::net::Ipv4Addr>()
            .with_context(|| format!("BMC address {addr:?}"))?;

        let dir = tempfile::Builder::new()
            .prefix("nib-bmc-")
            .tempdir()
            .context("creating the BMC's directory")?;
        let p = dir.path();
        fs::set_permissions(p, fs::Permissions::from_mode(0o700))?;
        fs::create_dir(p.join("state"))?;
        let write = |name: &str, text: &str, mode: u32| -> Result<()> {
            let path = p.join(name);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_600()
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(text.as_bytes())?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            Ok(())
        };
        // One MC (the BMC at 0x20) and its LAN channel; RMCP+ (lanplus)
        // with the user's password; admin only (fencing needs the
        // chassis control command).
        let lan_conf = format!(
            r#"name "nib-bmc"
set_working_mc 0x20
  startlan 1
    addr {addr} {PORT}
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{chassis}"
  user 2 true "{user}" "{password}" admin 10 md5
"#,
            chassis = p.join("chassis").display(),
        );
        write("lan.conf", &lan_conf, 0o600)?;
        write(
            "emu",
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
            0o600,
        )?;
        write("chassis", &chassis_script(p), 0o700)?;
        write("power-on", "", 0o600)?;
        let log = fs::File::create(p.join("ipmi_sim.log"))?;
        let child = Cmd::new("ip")
            .args(["netns", "exec", netns, "ipmi_sim", "-n", "-c"])
            .arg(p.join("lan.conf"))
            .arg("-f")
            .arg(p.join("emu"))
            .arg("-s")
            .arg(p.join("state"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting ipmi_sim (Debian package openipmi)")?;
        let mut bmc = Bmc {
            child,
            dir,
            netns: netns.to_string(),
            addr: addr.to_string(),
        };
        bmc.wait_listening(Duration::from_secs(10))?;
        crate::log(&format!(
            "BMC {addr} in netns {netns}: ipmi_sim pid {}",
            bmc.child.id()
        ));
        Ok(bmc)
    }

    fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let want = format!("{}:{PORT}", self.addr);
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "ipmi_sim exited ({st}) before listening on {want}: {}",
                    fs::read_to_string(self.dir.path().join("ipmi_sim.log")).unwrap_or_default()
                );
            }
            let ss = Cmd::new("ip")
                .args(["netns", "exec", &self.netns, "ss", "-Hnul"])
                .unlogged()
                .stdout_text()?;
            if ss.split_whitespace().any(|w| w == want) {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                bail!("ipmi_sim does not listen on {want} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn address(&self) -> &str {
        &self.addr
    }

    /// ipmi_sim's PID (in the host's PID namespace).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Run `argv` whenever chassis power goes to `power`, before the BMC
    /// records the change and answers: for `Off`, e.g. `kill -9` of the
    /// node's nspawn, so the node is dead when fencing reports success.
    /// It must be quick (ipmitool resends a request it has no answer to
    /// after about a second); a failing hook fails the IPMI command and
    /// leaves the power as it was. `None` removes the hook.
    pub fn set_power_hook(&self, power: Power, argv: Option<&[&str]>) -> Result<()> {
        let path = self.dir.path().join(match power {
            Power::On => "hook-on",
            Power::Off => "hook-off",
        });
        let Some(argv) = argv else {
            let _ = fs::remove_file(&path);
            return Ok(());
        };
        ensure!(!argv.is_empty(), "a power hook needs a program");
        let line: Vec<String> = argv.iter().map(|a| nib_host::cmd::sh_quote(a)).collect();
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, format!("#!/bin/sh\nexec {}\n", line.join(" ")))
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }

    /// Chassis power now.
    pub fn power(&self) -> Power {
        if self.dir.path().join("power-on").exists() {
            Power::On
        } else {
            Power::Off
        }
    }

    /// Every power change so far, oldest first.
    pub fn events(&self) -> Result<Vec<PowerEvent>> {
        let path = self.dir.path().join("events");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        text.lines()
            .map(|l| {
                let (state, at) = l
                    .split_once(' ')
                    .with_context(|| format!("{}: bad line {l:?}", path.display()))?;
                let power = match state {
                    "on" => Power::On,
                    "off" => Power::Off,
                    _ => bail!("{}: bad state in {l:?}", path.display()),
                };
                let at_unix_s = at
                    .parse()
                    .with_context(|| format!("{}: bad time in {l:?}", path.display()))?;
                Ok(PowerEvent { power, at_unix_s })
            })
            .collect()
    }

    /// Wait until at least `n` events are recorded; returns them all.
    pub fn wait_events(&self, n: usize, timeout: Duration) -> Result<Vec<PowerEvent>> {
        let t0 = Instant::now();
        loop {
            let ev = self.events()?;
            if ev.len() >= n {
                return Ok(ev);
            }
            if t0.elapsed() > timeout {
                bail!(
                    "BMC {}: {} power events after {timeout:?}, wanted {n}",
                    self.addr,
                    ev.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The chassis program's calls (`get power`, `set power 0`, …), for
    /// a failure message.
    pub fn calls(&self) -> String {
        fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default()
    }

    /// Where the BMC keeps its files (lan.conf holds the password).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// `OpenOptions` with mode 0600 from the start (the password is written
/// into a file nobody else could open meanwhile).
trait Mode600 {
    fn mode_600(&mut self) -> &mut Self;
}

impl Mode600 for fs::OpenOptions {
    fn mode_600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = kill(pid, Signal::SIGKILL);
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // the TempDir goes after this: lan.conf with the password too
    }
}
