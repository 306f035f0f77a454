//! `nib seed` (one node's NoCloud seed from cluster.toml, as a CIDATA vfat
//! image or a directory) and `nib cluster init` (a cluster.toml with fresh
//! secrets). The schema and the seed's content live in `nib_firstboot`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use nib_firstboot::role::{Arbiter, ClusterSpec, FencingMode};
use nib_firstboot::seed::{init_spec, seed_files, SeedFiles};
use nib_host::write::write_file;
use nib_host::Cmd;

use crate::cli::{ClusterInitArgs, SeedArgs, SeedFormat};
use crate::error::invalid;

/// Size of the CIDATA image in KiB: ample for a few KiB of seed, small
/// enough for FAT12 and quick to write.
const VFAT_KIB: u32 = 1024;
/// FAT volume id of every seed image (bytes must not depend on the run).
const VFAT_VOLUME_ID: &str = "4e494221";

fn read_spec(path: &Path) -> Result<ClusterSpec> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ClusterSpec::from_toml(&text, &path.display().to_string()).map_err(|e| invalid(e.to_string()))
}

pub fn run_seed(args: &SeedArgs) -> Result<()> {
    let spec = read_spec(&args.cluster)?;
    let files = seed_files(&spec, &args.node, args.instance_id.as_deref()).map_err(|e| {
        invalid(format!(
            "{}: {}",
            args.cluster.display(),
            e.to_string().trim_start_matches("cluster.toml: ")
        ))
    })?;
    // seed_files validated the whole file
    if spec
        .validate_whole()
        .is_ok_and(|(pair, _)| pair.split_brain_possible())
    {
        eprintln!(
            "nib: warning: {}: {}",
            args.cluster.display(),
            nib_firstboot::role::pair::SPLIT_BRAIN_WARNING
        );
    }
    match args.format {
        SeedFormat::Dir => write_dir(&files, &args.out)?,
        SeedFormat::Vfat => write_vfat(&files, &args.out)?,
    }
    println!(
        "seed for {} written to {} ({})",
        args.node,
        args.out.display(),
        match args.format {
            SeedFormat::Dir => "directory",
            SeedFormat::Vfat => "vfat image labelled CIDATA",
        }
    );
    Ok(())
}

fn named(files: &SeedFiles) -> Vec<(&'static str, &str, u32)> {
    let mut v = vec![
        ("meta-data", files.meta_data.as_str(), 0o644),
        // user-data holds the secrets
        ("user-data", files.user_data.as_str(), 0o600),
    ];
    if let Some(n) = &files.network_config {
        v.push(("network-config", n.as_str(), 0o644));
    }
    v
}

fn write_dir(files: &SeedFiles, out: &Path) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, content, mode) in named(files) {
        write_file(&out.join(name), content.as_bytes(), mode)?;
    }
    if files.network_config.is_none() {
        // a stale network-config from an earlier seed would be read by cloud-init
        let _ = fs::remove_file(out.join("network-config"));
    }
    Ok(())
}

/// Timestamp for every file in the image: SOURCE_DATE_EPOCH, else 2000-01-01
/// (FAT cannot store dates before 1980).
fn epoch() -> SystemTime {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s >= 315_532_800)
        .unwrap_or(946_684_800);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// A FAT image labelled CIDATA, made as a plain file with mkfs.fat -C and
/// mtools' mcopy: no root, no loop device. `--invariant`, a fixed volume id,
/// fixed mtimes and TZ=UTC make the bytes depend on the content only.
fn write_vfat(files: &SeedFiles, out: &Path) -> Result<()> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile_dir(dir)?;
    let _cleanup = RemoveDir(staging.clone());
    let img = staging.join("cidata.img");
    Cmd::new("mkfs.fat")
        .args(["-C", "--invariant", "-n", "CIDATA", "-i", VFAT_VOLUME_ID])
        .arg(&img)
        .arg(VFAT_KIB.to_string())
        .env("TZ", "UTC")
        .run()?;
    for (name, content, _) in named(files) {
        let src = staging.join(name);
        fs::write(&src, content).with_context(|| format!("writing {}", src.display()))?;
        fs::File::options()
            .write(true)
            .open(&src)
            .and_then(|f| f.set_modified(epoch()))
            .with_context(|| format!("setting mtime of {}", src.display()))?;
        Cmd::new("mcopy")
            .arg("-i")
            .arg(&img)
            .arg("-m")
            .arg(&src)
            .arg(format!("::/{name}"))
            .env("TZ", "UTC")
            .env("MTOOLS_SKIP_CHECK", "1")
            .run()?;
    }
    let bytes = fs::read(&img).with_context(|| format!("reading {}", img.display()))?;
    // the image holds secrets (user-data)
    Ok(write_file(out, &bytes, 0o600)?)
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf> {
    for i in 0..100u32 {
        let p = parent.join(format!(".nib-seed.{}.{i}", std::process::id()));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
        }
    }
    anyhow::bail!("cannot create a staging directory in {}", parent.display())
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn run_cluster_init(args: &ClusterInitArgs) -> Result<()> {
    let mut nodes = Vec::new();
    for n in &args.nodes {
        let (name, addr) = n
            .split_once('=')
            .ok_or_else(|| invalid(format!("--node {n:?}: expected NAME=ADDRESS")))?;
        nodes.push((name.to_string(), addr.to_string()));
    }
    let arbiter = match &args.arbiter {
        None => None,
        Some(a) => {
            let (name, address) = a
                .split_once('=')
                .ok_or_else(|| invalid(format!("--arbiter {a:?}: expected NAME=ADDRESS")))?;
            Some(Arbiter {
                name: name.to_string(),
                address: address.to_string(),
            })
        }
    };
    // With an arbiter, mode "none" is safe (the third vote decides a
    // split) and needs no BMC; without one the operator chooses: BMC
    // addresses and passwords are not nib's to invent, and "none" alone
    // is refused (issue 17).
    let fencing = arbiter.as_ref().map(|_| FencingMode::None);
    let mut spec = init_spec(
        &args.name,
        &nodes,
        &args.vip,
        &args.interface,
        fencing,
        None,
    )?;
    spec.arbiter = arbiter;
    // Everything but the fencing choice (and the certificates, made once
    // the rest is right) must already be valid.
    let problems: Vec<String> = spec
        .problems("")
        .into_iter()
        .filter(|p| p.path != "fencing.mode" && p.path != "secrets.arbiter")
        .map(|p| format!("  {p}"))
        .collect();
    if !problems.is_empty() {
        return Err(invalid(format!(
            "nib cluster init: invalid arguments:\n{}",
            problems.join("\n")
        )));
    }
    if let Some(a) = &spec.arbiter {
        spec.secrets.arbiter = Some(crate::arbiter::make_certs(&spec.cluster.name, a)?);
    }
    let fencing_help = if spec.arbiter.is_some() {
        "[fencing]\n# \"none\": the arbiter decides which side of a split keeps quorum. With\n# BMCs, mode = \"ipmi\" and a [[fencing.device]] per node (node, address,\n# username, password) also powers off a node that hangs.\n"
    } else {
        "[fencing]\n# Choose: mode = \"ipmi\" with a [[fencing.device]] per node (node, address,\n# username, password), or mode = \"none\" with an arbiter (`nib cluster init\n# --arbiter NAME=ADDR`). \"none\" alone loses acknowledged writes on a network\n# split and is refused unless accept_split_brain = true is set here.\n"
    };
    let body = spec.to_toml().replace("[fencing]\n", fencing_help);
    let text = format!(
        "# Role data of the pair, made by `nib cluster init`. Holds secrets: keep it private.\n# Make each node's seed with `nib seed {} --node NAME --out PATH`{}.\n\n{body}",
        args.out.display(),
        if spec.arbiter.is_some() {
            " (the arbiter's\n# too, or set up an existing host with `nib arbiter-setup FILE`)"
        } else {
            ""
        }
    );
    // it holds the secrets: 0600, and never over an existing file
    nib_host::write::write_new(&args.out, text.as_bytes(), 0o600).map_err(|e| {
        if e.source.kind() == std::io::ErrorKind::AlreadyExists {
            invalid(format!(
                "{}: already exists; not overwriting",
                args.out.display()
            ))
        } else {
            anyhow::Error::new(e)
        }
    })?;
    if spec.fencing.mode.is_some() {
        println!(
            "wrote {} with fresh secrets (fencing \"none\": the arbiter decides splits)",
            args.out.display()
        );
    } else {
        println!(
            "wrote {} with fresh secrets; choose [fencing] mode before `nib seed`",
            args.out.display()
        );
    }
    Ok(())
}
