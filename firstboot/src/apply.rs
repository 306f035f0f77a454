//! `nib-firstboot apply`: seed → validated role data → this node's files,
//! written under a root, once per instance-id (cloud-init semantics).
//!
//! Order: everything is validated and every owner resolved before the first
//! write (invalid input changes nothing); files are written atomically; the
//! instance-id is recorded last, so a crash at any point leaves a node that
//! the next run finishes, converging to the same tree.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::datasource::{self, parse_seed, Seed};
use crate::fsutil::{self, failpoint, FileWrite, Owner, Root, WriteOutcome};
use crate::node_state::{self, recorded_instance_id, NodeRecord, INSTANCE_ID_PATH};
use crate::nssdb::{self, NssDb};
use crate::pacemaker::{wants_initial_cib, write_initial_cib, CIB_PATH};
use crate::render::{self, mariadb_paths, RenderedFile};
use crate::role::{Role, RoleData};
use nib_host::Cmd;

use crate::log;

/// SSH host key types generated on first boot (Debian's `ssh-keygen -A` set).
const HOST_KEY_TYPES: &[&str] = &["rsa", "ecdsa", "ed25519"];

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Target root (`/` on a node).
    pub root: PathBuf,
    /// Use this seed directory instead of searching.
    pub seed: Option<PathBuf>,
    /// Print what would change; write nothing.
    pub dry_run: bool,
    /// Apply even when the instance-id was already applied.
    pub force: bool,
    /// Initialise an empty MariaDB datadir under a root other than `/`
    /// (in a chroot). On `/` it is always done when the datadir is empty.
    pub init_datadir: bool,
    /// Generate missing SSH host keys (on by default).
    pub host_keys: bool,
    /// On `/`, initialise an empty MariaDB datadir (on by default). Off:
    /// left to `nib-firstboot datadir` (nib-datadir.service), so that
    /// mariadb-install-db is not on the way to the network.
    pub datadir: bool,
}

impl ApplyOptions {
    /// Whether this run initialises an empty MariaDB datadir: on `/` unless
    /// left to nib-datadir.service (`--no-datadir`), elsewhere only when
    /// asked (`--init-datadir`).
    fn inits_datadir(&self, live: bool) -> bool {
        if live {
            self.datadir
        } else {
            self.init_datadir
        }
    }

    pub fn new(root: impl Into<PathBuf>) -> ApplyOptions {
        ApplyOptions {
            root: root.into(),
            seed: None,
            dry_run: false,
            force: false,
            init_datadir: false,
            host_keys: true,
            datadir: true,
        }
    }
}

/// The outcome of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The instance-id was already applied.
    NothingToDo {
        instance_id: String,
    },
    Applied {
        instance_id: String,
        node: String,
        written: usize,
        unchanged: usize,
    },
    DryRun {
        changes: usize,
    },
}

/// Read the seed (given or found), parse and validate the role data.
/// Errors here are the input's fault (exit 2) unless reading failed.
pub fn load(opts: &ApplyOptions) -> Result<(Seed, RoleData, Role)> {
    let seed = match &opts.seed {
        Some(dir) => datasource::load_dir(dir)?,
        None => {
            let cmdline = if opts.root == Path::new("/") {
                fs::read_to_string("/proc/cmdline").ok()
            } else {
                None
            };
            datasource::find(&opts.root, cmdline.as_deref())?
        }
    };
    let (rd, role) = parse_seed(&seed)?;
    Ok((seed, rd, role))
}

/// The full list of files for this host: rendered configs plus nib's own
/// record (without the instance-id, which is written last).
pub fn plan(rd: &RoleData, role: &Role, seed: &Seed) -> Result<Vec<RenderedFile>> {
    let mut files = match role {
        Role::Node(r) => render::render_node(r)?,
        Role::Arbiter(a) => render::render_arbiter(a)?,
    };
    node_state::record_files(&mut files, &rd.spec, &seed.instance_id, role.name())?;
    Ok(files)
}

/// The NSS database this host's corosync-qnetd or corosync-qdevice
/// reads, when it has one.
fn nss_db(role: &Role) -> Option<NssDb<'_>> {
    match role {
        Role::Node(r) => r
            .pair
            .arbiter
            .as_ref()
            .map(|a| NssDb::qdevice(&a.tls.ca_cert, &a.tls.cluster_cert, &a.tls.cluster_key)),
        Role::Arbiter(a) => Some(NssDb::qnetd(
            &a.tls.ca_cert,
            &a.tls.qnetd_cert,
            &a.tls.qnetd_key,
        )),
    }
}

pub fn apply(opts: &ApplyOptions) -> Result<Outcome> {
    let (seed, rd, role) = match load(opts) {
        Ok(v) => v,
        Err(e) => {
            // cloud-init semantics: a configured node whose seed is gone
            // (the CIDATA stick removed) keeps its configuration and boots.
            let gone = e
                .downcast_ref::<datasource::SeedError>()
                .is_some_and(|s| matches!(s, datasource::SeedError::NotFound(_)));
            if gone && opts.seed.is_none() {
                if let Some(iid) = recorded_instance_id(&opts.root) {
                    println!("nothing to do: no seed found; keeping the applied instance-id {iid}");
                    return Ok(Outcome::NothingToDo { instance_id: iid });
                }
            }
            return Err(e);
        }
    };
    let node = role.name().to_string();
    let is_node = matches!(role, Role::Node(_));
    log::info(&format!(
        "seed {} (instance-id {}), node {node}",
        seed.origin, seed.instance_id
    ));
    // Every boot runs this unit, applied or not: the accepted split brain
    // is in the journal of every boot (firstboot/doc/HA.md, "Fencing").
    if let Role::Node(r) = &role {
        if r.pair.split_brain_possible() {
            log::warn(crate::role::pair::SPLIT_BRAIN_WARNING);
        }
    }
    let root = Root::open(&opts.root)?;
    if !opts.force && recorded_instance_id(&opts.root).as_deref() == Some(seed.instance_id.as_str())
    {
        println!(
            "nothing to do: instance-id {} is already applied",
            seed.instance_id
        );
        return Ok(Outcome::NothingToDo {
            instance_id: seed.instance_id,
        });
    }
    let files = plan(&rd, &role, &seed)?;
    // Resolve every owner before the first write: a root without the
    // rabbitmq user fails here, with nothing changed.
    for f in &files {
        root.ids(&f.owner)
            .with_context(|| format!("owner of {}", f.path.display()))?;
    }
    if let Some(db) = nss_db(&role) {
        root.ids(&db.owner)
            .with_context(|| format!("owner of {}", db.dir))?;
    }
    let live = opts.root == Path::new("/");
    let datadir = node_state::under(&opts.root, mariadb_paths::DATADIR);
    // an arbiter has no MariaDB
    let datadir_empty = is_node && dir_is_empty_or_missing(&datadir)?;

    if opts.dry_run {
        return dry_run(&root, &files, &role, &seed, opts, live, datadir_empty);
    }

    let mut written = 0;
    let mut unchanged = 0;
    let mut units_changed = false;
    if files.iter().any(|f| f.path.starts_with("/root/.ssh")) {
        root.ensure_dir(Path::new("/root/.ssh"), 0o700, &Owner::root())?;
    }
    let batch: Vec<FileWrite> = files
        .iter()
        .map(|f| FileWrite {
            path: &f.path,
            bytes: &f.content,
            mode: f.mode,
            owner: &f.owner,
        })
        .collect();
    for (f, outcome) in files.iter().zip(root.write_many(&batch)?) {
        match outcome {
            WriteOutcome::Unchanged => {
                unchanged += 1;
                log::info(&format!("unchanged {}", f.path.display()));
            }
            WriteOutcome::Fixed => {
                written += 1;
                log::info(&format!("fixed mode/owner of {}", f.path.display()));
            }
            WriteOutcome::Written => {
                written += 1;
                units_changed |= f.path.starts_with("/etc/systemd/system");
                log::info(&format!("wrote {}", f.path.display()));
            }
        }
    }
    if opts.host_keys {
        written += ensure_host_keys(&root, &node)?;
    }
    if live {
        set_live_hostname(&node)?;
        // systemd loaded its units before this ran: make it see the
        // memcached drop-in before memcached starts.
        if units_changed && Path::new("/run/systemd/system").exists() {
            Cmd::new("systemctl").arg("daemon-reload").output()?;
        }
    }
    if datadir_empty {
        if opts.inits_datadir(live) {
            init_datadir(&root, live)?;
            written += 1;
        } else if live {
            log::info(&format!(
                "{} is empty: left for `nib-firstboot datadir` (nib-datadir.service)",
                datadir.display()
            ));
        } else {
            log::info(&format!(
                "{} is empty: not initialising it under --root {} (pass --init-datadir to run mariadb-install-db in a chroot; on the node it runs at first boot)",
                datadir.display(),
                opts.root.display()
            ));
        }
    }
    // qnetd's or qdevice's certificates (and none on a pair without arbiter)
    let nss_changed = match nss_db(&role) {
        Some(db) => nssdb::ensure(&root, &db)?,
        None => nssdb::remove(&root, nssdb::QDEVICE_DB)?,
    };
    written += usize::from(nss_changed);
    // pacemaker's first start uses nib's CIB (dc-deadtime 500ms, resources
    // defined) instead of waiting 20 s for its first DC election.
    if let Role::Node(r) = &role {
        if write_initial_cib(&root, &r.pair)? {
            written += 1;
            log::info(&format!("wrote {CIB_PATH}"));
        }
    }
    // Last: from here on this instance-id counts as applied.
    node_state::record_instance_id(&root, &seed.instance_id)?;
    println!(
        "applied instance-id {} as {node}: {written} changed, {unchanged} unchanged",
        seed.instance_id
    );
    Ok(Outcome::Applied {
        instance_id: seed.instance_id,
        node,
        written,
        unchanged,
    })
}

fn dry_run(
    root: &Root,
    files: &[RenderedFile],
    role: &Role,
    seed: &Seed,
    opts: &ApplyOptions,
    live: bool,
    datadir_empty: bool,
) -> Result<Outcome> {
    let node = role.name();
    let mut changes = 0;
    println!(
        "dry run: instance-id {} as {node}; would change:",
        seed.instance_id
    );
    for f in files {
        let Some(kind) = root.needs_write(&f.path, &f.content, f.mode, &f.owner)? else {
            continue;
        };
        changes += 1;
        let what = match kind {
            WriteOutcome::Fixed => "mode/owner",
            _ => "content",
        };
        println!(
            "  {} ({what}; {:o} {}:{})",
            f.path.display(),
            f.mode,
            f.owner.user,
            f.owner.group
        );
        if kind == WriteOutcome::Written {
            if f.secret {
                println!("    (content holds secrets: not shown)");
            } else {
                print_diff(root, f);
            }
        }
    }
    if opts.host_keys {
        for t in HOST_KEY_TYPES {
            let p = root.resolve(Path::new(&format!("/etc/ssh/ssh_host_{t}_key")))?;
            if !p.exists() {
                changes += 1;
                println!("  {} (generate)", p.display());
            }
        }
    }
    if datadir_empty && opts.inits_datadir(live) {
        changes += 1;
        println!("  {} (mariadb-install-db)", mariadb_paths::DATADIR);
    }
    if let Some(db) = nss_db(role) {
        if nssdb::needs_update(root, &db)? {
            changes += 1;
            println!(
                "  {} (NSS database: {:?}, {:?} and its key)\n    (content holds secrets: not shown)",
                db.dir,
                nssdb::CA_NICKNAME,
                db.nickname
            );
        }
    }
    if matches!(role, Role::Node(_)) && wants_initial_cib(root)? {
        changes += 1;
        println!("  {CIB_PATH} (initial pacemaker CIB)\n    (content holds secrets: not shown)");
    }
    println!("  {INSTANCE_ID_PATH} (record {})", seed.instance_id);
    Ok(Outcome::DryRun {
        changes: changes + 1,
    })
}

/// A short line diff: lines removed (-) and added (+), in file order.
fn print_diff(root: &Root, f: &RenderedFile) {
    let old = root
        .resolve(&f.path)
        .ok()
        .and_then(|p| fs::read(p).ok())
        .unwrap_or_default();
    let old = String::from_utf8_lossy(&old);
    let new = String::from_utf8_lossy(&f.content);
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    for l in &old_lines {
        if !new_lines.contains(l) {
            println!("    -{l}");
        }
    }
    for l in &new_lines {
        if !old_lines.contains(l) {
            println!("    +{l}");
        }
    }
}

fn dir_is_empty_or_missing(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// /etc/hostname is read by systemd before this runs; set the running
/// hostname too, so this boot already has the node's name.
fn set_live_hostname(node: &str) -> Result<()> {
    let current = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    if current != node {
        nix::unistd::sethostname(node)
            .with_context(|| format!("setting the hostname to {node}"))?;
        log::info(&format!("hostname set to {node}"));
    }
    Ok(())
}

/// Fresh SSH host keys where missing (the image ships none, so two nodes
/// never share one). Each key is made in a scratch dir and renamed into
/// place, public half first and private half last, so a crash leaves either
/// no key or a complete pair. Returns how many keys were generated.
pub fn ensure_host_keys(root: &Root, node: &str) -> Result<usize> {
    let ssh = Path::new("/etc/ssh");
    root.ensure_dir(ssh, 0o755, &Owner::root())?;
    let ssh_dir = root.resolve(ssh)?;
    let scratch = ssh_dir.join(".nib-hostkeys");
    match fs::remove_dir_all(&scratch) {
        Ok(()) => fsutil::sync_dir(&ssh_dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", scratch.display())),
    }
    let mut made = 0;
    for t in HOST_KEY_TYPES {
        let key = ssh_dir.join(format!("ssh_host_{t}_key"));
        let pubkey = ssh_dir.join(format!("ssh_host_{t}_key.pub"));
        if key.exists() && pubkey.exists() {
            continue;
        }
        fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        fs::set_permissions(&scratch, fs::Permissions::from_mode(0o700))?;
        let tmp = scratch.join("key");
        Cmd::new("ssh-keygen")
            .args(["-q", "-t", t, "-N", "", "-C"])
            .arg(format!("root@{node}"))
            .arg("-f")
            .arg(&tmp)
            .output()?;
        let tmp_pub = scratch.join("key.pub");
        for (p, mode) in [(&tmp, 0o600), (&tmp_pub, 0o644)] {
            fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
            fs::File::open(p).and_then(|f| f.sync_all())?;
        }
        failpoint();
        fs::rename(&tmp_pub, &pubkey)
            .with_context(|| format!("installing {}", pubkey.display()))?;
        failpoint();
        fs::rename(&tmp, &key).with_context(|| format!("installing {}", key.display()))?;
        fsutil::sync_dir(&ssh_dir)?;
        log::info(&format!("generated {}", key.display()));
        made += 1;
    }
    let _ = fs::remove_dir(&scratch);
    Ok(made)
}

/// `nib-firstboot host-keys` (nib-hostkeys.service, ordered before sshd
/// only): this node's missing SSH host keys, named after its hostname. Runs
/// at every boot; generates nothing when all keys exist.
pub fn host_keys_command(root: &Path) -> Result<usize> {
    let root_h = Root::open(root)?;
    // The comment names the node as apply's would: the node first boot
    // recorded, else the hostname it set.
    let node = NodeRecord::read(root)
        .node
        .or_else(|| {
            fs::read_to_string(root.join("etc/hostname"))
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_string());
    let made = ensure_host_keys(&root_h, &node)?;
    println!("host keys: {made} generated");
    Ok(made)
}

/// `nib-firstboot datadir` (nib-datadir.service, which ocf:nib:mariadb
/// starts and waits for before it starts MariaDB): initialise the MariaDB datadir when it is empty, after first boot
/// wrote MariaDB's configuration. Runs at every boot; a datadir with
/// anything in it is left alone, so a crash half-way converges next boot.
pub fn datadir_command(root: &Path) -> Result<bool> {
    let live = root == Path::new("/");
    if recorded_instance_id(root).is_none() {
        bail!(
            "{} is not recorded: first boot (`nib-firstboot apply`) has not configured this node, so MariaDB has no configuration to initialise its datadir with",
            node_state::under(root, INSTANCE_ID_PATH).display()
        );
    }
    let datadir = node_state::under(root, mariadb_paths::DATADIR);
    if !dir_is_empty_or_missing(&datadir)? {
        println!("datadir: {} is initialised", datadir.display());
        return Ok(false);
    }
    init_datadir(&Root::open(root)?, live)?;
    println!("datadir: initialised {}", datadir.display());
    Ok(true)
}

/// The image ships an empty `/var/lib/mysql` (reproducible builds). Make a
/// fresh datadir with secure defaults in a scratch dir beside it, then swap
/// it in with a rename, so a crash leaves either the empty dir or a complete
/// datadir, never half of one.
fn init_datadir(root: &Root, live: bool) -> Result<()> {
    let datadir = root.resolve(Path::new(mariadb_paths::DATADIR))?;
    let parent = datadir
        .parent()
        .context("datadir has no parent")?
        .to_path_buf();
    let scratch_rel = "/var/lib/.mysql.nib-init";
    let scratch = root.resolve(Path::new(scratch_rel))?;
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    let cmd = if live {
        Cmd::new("mariadb-install-db")
    } else {
        Cmd::new("chroot")
            .arg(root.path())
            .arg("mariadb-install-db")
    };
    cmd.args([
        "--user=mysql",
        &format!("--datadir={scratch_rel}"),
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
    ])
    .run()?;
    // keep the packaged dir's mode and owner
    let (mode, uid, gid) = match fs::metadata(&datadir) {
        Ok(m) => (m.mode() & 0o7777, m.uid(), m.gid()),
        Err(_) => {
            let owner = Owner::new("mysql", "mysql");
            let (u, g) = root.ids(&owner)?;
            (0o755, u, g)
        }
    };
    nix::unistd::chown(&scratch, Some(uid.into()), Some(gid.into()))
        .with_context(|| format!("chown {}", scratch.display()))?;
    fs::set_permissions(&scratch, fs::Permissions::from_mode(mode))?;
    Cmd::new("sync").arg("-f").arg(&scratch).output()?;
    if datadir.exists() {
        fs::remove_dir(&datadir)
            .with_context(|| format!("removing empty {}", datadir.display()))?;
    }
    failpoint();
    fs::rename(&scratch, &datadir).with_context(|| format!("installing {}", datadir.display()))?;
    fsutil::sync_dir(&parent)?;
    log::info(&format!("initialised {}", mariadb_paths::DATADIR));
    Ok(())
}
