//! `nib build`: image definition → layers (cached by key) → rootfs.tar.zst,
//! manifest.json, SHA256SUMS, images/<name>.lock.
//!
//! Every layer's key is known before anything is built: the package versions
//! come from the mirror's index, so an unchanged image costs one InRelease
//! download and no bootstrap at all.
//!
//! The build is a list of stages, each in its module: plan (the keys,
//! pure), decide (what the cache serves), execute (the trees: mmdebstrap,
//! apt in a chroot, finalize), publish (blobs, rootfs, outputs, manifest).

mod chroot;
mod decide;
mod execute;
pub mod plan;
mod publish;

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cache::Cache;
use crate::cli::{BuildArgs, OutputKind};
use crate::error::invalid;
use crate::image::ImageDefinition;
use crate::index::{self, PackageIndex};
use crate::manifest::{Lock, Manifest};
use crate::mounts::enter_private_namespace;
use crate::progress::{Mode, Progress};

pub use execute::{DPKG_EXCLUDES, DPKG_FILTERS_FILE};
pub use plan::{LayerPlan, FINALIZE, LAYER_FORMAT};

pub struct Options {
    pub out: PathBuf,
    pub cache: PathBuf,
    /// Package store to use instead of `<cache>/debs` (verify shares it).
    pub debs: Option<PathBuf>,
    pub outputs: Vec<OutputKind>,
    pub locked: bool,
    pub write_lock: bool,
}

fn check_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(invalid(
            "nib build must run as root (it mounts overlays and runs apt in a chroot); try: sudo nib build …",
        ));
    }
    Ok(())
}

pub fn run(args: &BuildArgs) -> Result<()> {
    let img = ImageDefinition::load(&args.image)?;
    check_root()?;
    let mode = if args.json {
        Mode::Json
    } else if args.quiet {
        Mode::Quiet
    } else {
        Mode::Human
    };
    let mut p = Progress::new(mode);
    enter_private_namespace()?;
    let opts = Options {
        out: args.out.clone(),
        cache: args.cache.clone(),
        debs: None,
        outputs: args.outputs.clone(),
        locked: args.locked,
        write_lock: true,
    };
    let m = build(&img, &opts, &mut p)?;
    let out_dir = opts.out.join(&img.name);
    match mode {
        Mode::Json => {
            let v = serde_json::json!({
                "event": "done",
                "elapsed": p.elapsed(),
                "out_dir": out_dir,
                "layers": m.layers,
                "outputs": m.outputs,
                "timings": if args.timings { Some(&p.timings) } else { None },
            });
            println!("{v}");
        }
        Mode::Human | Mode::Quiet => {
            if mode == Mode::Human {
                for o in &m.outputs {
                    eprintln!("{}  {}", o.sha256, out_dir.join(&o.path).display());
                }
                eprintln!("built {} in {:.1}s", img.name, p.elapsed());
            }
            if args.timings {
                print!("{}", p.table());
            }
        }
    }
    Ok(())
}

pub fn build(img: &ImageDefinition, opts: &Options, p: &mut Progress) -> Result<Manifest> {
    let cache = Cache::open(&opts.cache, opts.debs.as_deref())?;
    let (files, idx) = p.step("index", "resolve", || {
        let files = index::fetch(&cache.index(), img)?;
        let idx = PackageIndex::load(&files, &img.architecture)?;
        Ok((files, idx))
    })?;
    plan::check_packages(img, &idx)?;
    let lock = opts
        .locked
        .then(|| Lock::read(&img.lock_path()))
        .transpose()?;
    if let Some(lock) = &lock {
        plan::check_lock(img, lock, &idx)?;
    }
    let sources = plan::Sources::read(img)?;
    let plans = plan::layers(img, &sources, Some(&idx), true)?;

    let bootable = opts.outputs.iter().any(|k| *k != OutputKind::Rootfs);
    let decision = decide::decide(&cache, &idx, &plans, bootable);

    let pins = lock.as_ref().map(plan::lock_pins);
    let mut ctx = execute::Ctx::new(img, &cache, &idx, files.dir.clone(), pins);
    ctx.fetch(&plans, &decision.to_fetch(img, &plans), p)?;
    let layers = execute::layers(&ctx, &plans, &decision, p)?;

    let (rootfs, fresh) = publish::rootfs(&cache, img, &layers, &decision, p)?;
    let out_dir = opts.out.join(&img.name);
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut outputs = vec![p.step("rootfs", "output", || {
        publish::rootfs_output(&cache, &rootfs, fresh, &out_dir)
    })?];
    if bootable {
        outputs.extend(p.step("outputs", "outputs", || {
            publish::outputs(&cache, img, &layers, &rootfs, &opts.outputs, &out_dir)
        })?);
    }
    let packages = layers
        .records
        .last()
        .map(|r| r.packages.clone())
        .unwrap_or_default();
    if let Some(lock) = &lock {
        publish::check_locked(img, lock, &packages)?;
    }
    let definition = plan::definition_digest(img, &sources);
    let manifest = publish::manifest(img, definition, &layers.records, packages, outputs);
    manifest.write(&out_dir)?;
    // work dirs are done with (their mounts are gone)
    crate::fsutil::remove_any(&cache.tmp())?;
    fs::create_dir_all(cache.tmp())?;
    if opts.write_lock && lock.is_none() {
        publish::write_lock(img, manifest.packages.clone(), p)?;
    }
    Ok(manifest)
}

/// Write a line to stderr unless quiet (used by verify).
pub fn say(quiet: bool, msg: &str) {
    if !quiet {
        let _ = writeln!(std::io::stderr(), "{msg}");
    }
}
