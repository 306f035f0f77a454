//! Execute: put every layer's tree on disk, bottom first: a reused one
//! from the cache, a new one built over the ones below it (mmdebstrap for
//! the base, apt in a chroot above it, finalize's initramfs last), its blob
//! sealed in the background.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::chroot::{self, bootstrap_wrap, host_program, noop_hooks};
use super::decide::{self, Decision};
use super::plan::{LayerPlan, FINALIZE};
use super::publish::{self, PendingSeal};
use crate::cache::{dpkg_status, Cache, InstalledPackage, LayerRecord};
use crate::image::{normalized_mode, ImageDefinition, Layer};
use crate::index::{Package, PackageIndex};
use crate::mounts::Mounts;
use crate::progress::Progress;
use crate::{clean, debs, seal};
use nib_host::cmd::sh_quote;
use nib_host::Cmd;

/// dpkg path filters (as mkosi does): no docs, man pages or locales in the
/// image, copyright files kept. Installed as DPKG_FILTERS_FILE (with the
/// base layer's `[dpkg]` ones) so packages added later on a node follow the
/// same rule.
pub const DPKG_FILTERS_FILE: &str = "etc/dpkg/dpkg.cfg.d/99nib-filters";
pub const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
];

/// What every layer of one build is made with.
pub struct Ctx<'a> {
    pub img: &'a ImageDefinition,
    pub cache: &'a Cache,
    pub idx: &'a PackageIndex,
    /// The verified package lists, bound as the chroot's apt lists.
    pub lists: PathBuf,
    /// apt preferences holding the locked versions (`--locked`).
    pub pins: Option<String>,
    /// libeatmydata for the image's suite (see nosync.rs), when it has one.
    pub nosync: Option<PathBuf>,
    /// Uncompressed package data in the cache, checked (see plain.rs).
    pub plain: HashMap<String, PathBuf>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        img: &'a ImageDefinition,
        cache: &'a Cache,
        idx: &'a PackageIndex,
        lists: PathBuf,
        pins: Option<String>,
    ) -> Self {
        Ctx {
            img,
            cache,
            idx,
            lists,
            pins,
            nosync: None,
            plain: HashMap::new(),
        }
    }

    /// Fetch every package the layers `to_build` may need, all at once.
    pub fn fetch(
        &mut self,
        plans: &[LayerPlan],
        to_build: &[usize],
        p: &mut Progress,
    ) -> Result<()> {
        if to_build.is_empty() {
            return Ok(());
        }
        let (cache, idx, img) = (self.cache, self.idx, self.img);
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for i in to_build {
            names.extend(plans[*i].closure.iter().map(|(n, _)| n.as_str()));
        }
        let nosync_pkg = crate::nosync::package(idx);
        let pkgs: Vec<&Package> = names
            .iter()
            .filter_map(|n| idx.get(n))
            .chain(nosync_pkg)
            .collect();
        let stats = p.step("packages", "download", || {
            debs::ensure(cache, &img.mirror, &pkgs)
        })?;
        if let Some(pkg) = nosync_pkg {
            self.nosync = crate::nosync::library(cache, pkg)?;
        }
        self.plain = p.step("packages", "plain", || crate::plain::verified(cache, &pkgs))?;
        p.line(
            "packages",
            &format!(
                "{} cached, {} downloaded ({:.1} MB), {} corrupt replaced",
                stats.reused,
                stats.downloaded,
                stats.bytes_downloaded as f64 / 1e6,
                stats.corrupt
            ),
        );
        Ok(())
    }
}

/// Every layer on disk, bottom first.
pub struct Layers {
    pub records: Vec<LayerRecord>,
    pub trees: Vec<PathBuf>,
}

impl Layers {
    /// Overlay lower dirs, top first.
    pub fn top_first(&self) -> Vec<PathBuf> {
        self.trees.iter().rev().cloned().collect()
    }
}

/// Reuse or build every layer of `plans` as `decision` says; returns once
/// every blob is sealed.
pub fn layers(
    ctx: &Ctx,
    plans: &[LayerPlan],
    decision: &Decision,
    p: &mut Progress,
) -> Result<Layers> {
    let (img, cache) = (ctx.img, ctx.cache);
    let n = plans.len();
    let reuse = &decision.reuse;
    let mut records: Vec<LayerRecord> = Vec::new();
    let mut trees: Vec<PathBuf> = Vec::new();
    let mut spec: Option<Speculation> = None;
    let mut old_specs: Vec<Speculation> = Vec::new();
    let mut pendings: Vec<(usize, PendingSeal)> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        // Once the layers that touch the initramfs inputs are there (the
        // base at least), make the initramfs in the background while the
        // upper layers install; finalize checks it still applies. A layer
        // whose files/ holds an input is waited for (predicted), one that
        // touches inputs through its packages starts a new run.
        if i >= 1 && reuse[n - 1].is_none() {
            let next_touches = plans[i]
                .layer
                .map(|l| crate::initramfs::touches(&img.layers[l].files_dir()))
                .unwrap_or(true);
            if crate::initramfs::touches(&trees[i - 1]) && !next_touches {
                let top_first: Vec<PathBuf> = trees.iter().rev().cloned().collect();
                if let Some(old) = spec.replace(Speculation::start(
                    cache,
                    &top_first,
                    &plans[i - 1].key,
                    img.epoch,
                )?) {
                    old_specs.push(old);
                }
            }
        }
        if let Some(rec) = &reuse[i] {
            let tree = cache.tree(&plan.key);
            let ok = !decision.needs_tree[i]
                || tree.is_dir()
                || decide::restore_tree(cache, plan, rec, p)?;
            if ok {
                p.line(&plan.name, &format!("reused sha256:{}", &rec.digest[..16]));
                records.push(rec.clone());
                trees.push(tree);
                continue;
            }
            // a corrupt blob: make sure its packages are there to rebuild
            let pkgs = closure_pkgs(ctx, plan);
            p.step("packages", "download", || {
                debs::ensure(cache, &img.mirror, &pkgs)
            })?;
        }
        let pending = build_layer(ctx, plan, &trees, p, &mut spec)?;
        p.line(&plan.name, "built");
        trees.push(cache.tree(&plan.key));
        pendings.push((records.len(), pending));
        records.push(LayerRecord {
            name: plan.name.clone(),
            key: plan.key.clone(),
            digest: String::new(),
            size: 0,
            packages: Vec::new(),
        });
    }

    for (i, pending) in pendings {
        records[i] = pending.finish(cache, p)?;
    }
    for s in spec.take().into_iter().chain(old_specs) {
        // a superseded run's result is cached by its digest; only wait
        let _ = s.join(p);
    }
    Ok(Layers { records, trees })
}

fn build_layer(
    ctx: &Ctx,
    plan: &LayerPlan,
    lowers: &[PathBuf],
    p: &mut Progress,
    spec: &mut Option<Speculation>,
) -> Result<PendingSeal> {
    let cache = ctx.cache;
    let work = cache.work_dir(&format!("layer-{}", plan.name))?;
    let layer = plan.layer.map(|i| &ctx.img.layers[i]);
    let (tree, packages) = if lowers.is_empty() {
        let layer = layer.context("the first layer is the base")?;
        let root = build_base(ctx, plan, layer, &work, p)?;
        p.step(&plan.name, "clean", || clean::clean_root(&root))?;
        let packages = read_status(&root)?;
        (root, packages)
    } else {
        let upper = work.join("upper");
        let ovl = work.join("work");
        let merged = work.join("merged");
        fs::create_dir_all(&upper)?;
        fs::create_dir_all(&ovl)?;
        let top_first: Vec<PathBuf> = lowers.iter().rev().cloned().collect();
        let mut m = Mounts::default();
        m.overlay(&top_first, &upper, &ovl, &merged)?;
        match layer {
            Some(layer) => apply_layer(ctx, plan, layer, &merged, &work, p)?,
            None => finalize(ctx, plan, &merged, &top_first, p, spec)?,
        }
        p.step(&plan.name, "clean", || clean::clean_root(&merged))?;
        let packages = read_status(&merged)?;
        m.unmount_all()?;
        (upper, packages)
    };
    // The tree is final once its mtimes are clamped: the next layer can
    // mount it while the tar+zstd of it runs in the background.
    p.step(&plan.name, "clamp", || {
        seal::clamp_tree(&tree, ctx.img.epoch)
    })?;
    let dest = cache.tree(&plan.key);
    crate::fsutil::remove_any(&dest)?;
    fs::rename(&tree, &dest).with_context(|| format!("renaming into {}", dest.display()))?;
    crate::fsutil::remove_any(&work)?;
    let rec = LayerRecord {
        name: plan.name.clone(),
        key: plan.key.clone(),
        digest: String::new(),
        size: 0,
        packages,
    };
    Ok(publish::seal_layer(cache, dest, rec, ctx.img.epoch))
}

fn read_status(root: &Path) -> Result<Vec<InstalledPackage>> {
    let p = root.join("var/lib/dpkg/status");
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(dpkg_status(&text))
}

fn closure_pkgs<'a>(ctx: &'a Ctx, plan: &LayerPlan) -> Vec<&'a Package> {
    plan.closure
        .iter()
        .filter_map(|(n, _)| ctx.idx.get(n))
        .collect()
}

/// The base layer: mmdebstrap (minbase + the layer's packages) into a
/// directory, using the package cache, with update-initramfs diverted (the
/// initramfs is made once, in finalize).
fn build_base(
    ctx: &Ctx,
    plan: &LayerPlan,
    layer: &Layer,
    work: &Path,
    p: &mut Progress,
) -> Result<PathBuf> {
    let img = ctx.img;
    let root = work.join("root");
    let archives = work.join("archives");
    let harvest = work.join("harvest");
    fs::create_dir_all(&root)?;
    fs::create_dir_all(&harvest)?;
    let pkgs = closure_pkgs(ctx, plan);
    debs::link(ctx.cache, &pkgs, &archives)?;
    crate::plain::link(&ctx.plain, &pkgs, &archives)?;
    let (noops_on, noops_off) = noop_hooks();
    // dpkg-deb wrappers (plain.rs): the host's, first in PATH, for the
    // Essential packages mmdebstrap extracts itself; the root's, diverted,
    // for dpkg in the root.
    let bin = work.join("nib-bin");
    fs::create_dir_all(&bin)?;
    let host_real = host_program("dpkg-deb")?;
    nib_host::write::write_file(
        &bin.join("dpkg-deb"),
        crate::plain::wrapper(&host_real.display().to_string()).as_bytes(),
        0o755,
    )?;
    let root_wrapper = work.join("nib-dpkg-deb");
    nib_host::write::write_file(
        &root_wrapper,
        crate::plain::wrapper("/usr/bin/dpkg-deb.nib-build").as_bytes(),
        0o755,
    )?;
    let (plain_on, plain_off) = bootstrap_wrap("/usr/bin/dpkg-deb", &root_wrapper);
    // nib's filters, then the base layer's own (dpkg: the last match wins)
    let filters: Vec<&str> = DPKG_EXCLUDES
        .iter()
        .copied()
        .chain(layer.dpkg_filters.iter().map(String::as_str))
        .collect();
    let path = std::env::var("PATH").unwrap_or_default();
    let mut r = Cmd::new("mmdebstrap")
        .env("PATH", format!("{}:{path}", bin.display()))
        .env("SOURCE_DATE_EPOCH", img.epoch.to_string())
        .env("LC_ALL", "C.UTF-8")
        .arg("--mode=root")
        .arg("--variant=minbase")
        .arg("--quiet")
        .arg(format!("--arch={}", img.architecture))
        .arg(format!("--keyring={}", img.keyring.display()))
        .arg(format!("--components={}", img.components.join(",")))
        .arg("--skip=cleanup/reproducible/machine-id")
        .arg(format!(
            "--setup-hook=mkdir -p \"$1/var/cache/apt/archives\" && cp -al {}/. \"$1/var/cache/apt/archives/\"",
            sh_quote(&archives.display().to_string())
        ))
        // the verified lists we already have: no second `apt-get update`
        .arg(format!(
            "--setup-hook=mkdir -p \"$1/var/lib/apt/lists\" && cp -al {}/*_InRelease {}/*_Packages \"$1/var/lib/apt/lists/\"",
            sh_quote(&ctx.lists.display().to_string()),
            sh_quote(&ctx.lists.display().to_string())
        ))
        .arg("--skip=update")
        .arg("--setup-hook=mkdir -p \"$1/etc/dpkg/dpkg.cfg.d\" && echo force-unsafe-io > \"$1/etc/dpkg/dpkg.cfg.d/00nib-unsafe-io\"")
        // where dpkg reads them, not --dpkgopt: see dpkgfilter.rs
        .arg(format!(
            "--setup-hook=printf '%s\\n' {} > \"$1/{DPKG_FILTERS_FILE}\"",
            filters.iter().map(|f| sh_quote(f)).collect::<Vec<_>>().join(" ")
        ))
        .arg(format!("--extract-hook={plain_on}"))
        .arg(format!("--essential-hook={noops_on}"));
    if let Some(pins) = &ctx.pins {
        let pf = work.join("nib-lock.pref");
        fs::write(&pf, pins)?;
        r = r
            .arg(format!(
                "--setup-hook=mkdir -p \"$1/etc/apt/preferences.d\" && cp {} \"$1/etc/apt/preferences.d/nib-lock\"",
                sh_quote(&pf.display().to_string())
            ))
            .arg("--customize-hook=rm -f \"$1/etc/apt/preferences.d/nib-lock\"");
    }
    if !layer.packages.is_empty() {
        r = r.arg(format!("--include={}", layer.packages.join(",")));
    }
    if let Some(lib) = &ctx.nosync {
        // every dpkg run of the bootstrap preloads the library: dpkg
        // wrapped once the Essential packages are extracted
        let script = work.join("nib-dpkg");
        nib_host::write::write_file(&script, crate::nosync::dpkg_wrapper().as_bytes(), 0o755)?;
        let (on, off) = bootstrap_wrap("/usr/bin/dpkg", &script);
        let in_root = crate::nosync::IN_ROOT;
        let on = format!(
            "cp {} \"$1{in_root}\" && {on}",
            sh_quote(&lib.display().to_string())
        );
        let off = format!("{off} && rm -f \"$1{in_root}\"");
        r = r
            .arg(format!("--extract-hook={on}"))
            .arg(format!("--customize-hook={off}"));
    }
    r = r
        .arg(format!(
            "--customize-hook=cp -al \"$1/var/cache/apt/archives/.\" {}/ 2>/dev/null || true",
            sh_quote(&harvest.display().to_string())
        ))
        .arg(format!(
            "--customize-hook=rm -rf \"$1/var/cache/apt/archives/{}\"",
            crate::plain::DIR
        ))
        .arg(format!("--customize-hook={plain_off}"))
        .arg(format!("--customize-hook={noops_off}"))
        .arg("--customize-hook=rm -f \"$1/etc/dpkg/dpkg.cfg.d/00nib-unsafe-io\"")
        .arg(&img.suite)
        .arg(&root)
        .arg(&img.mirror);
    p.step(&plan.name, "bootstrap", || Ok(r.run()?))?;
    p.step(&plan.name, "prune", || {
        crate::dpkgfilter::prune(&root, &filters).map(|_| ())
    })?;
    crate::plain::harvest(ctx.cache, &pkgs, &harvest.join(crate::plain::DIR))?;
    debs::harvest(ctx.cache, &harvest)?;
    p.step(&plan.name, "files", || {
        apply_files(layer, &root)?;
        apply_installs(layer, &root)?;
        apply_units(layer, &root)
    })?;
    Ok(root)
}

/// A layer over the ones below: apt-get install in a chroot that never
/// starts a service, then files/, install entries, units.
fn apply_layer(
    ctx: &Ctx,
    plan: &LayerPlan,
    layer: &Layer,
    merged: &Path,
    work: &Path,
    p: &mut Progress,
) -> Result<()> {
    if !layer.packages.is_empty() {
        let archives = work.join("archives");
        let pkgs = closure_pkgs(ctx, plan);
        debs::link(ctx.cache, &pkgs, &archives)?;
        crate::plain::link(&ctx.plain, &pkgs, &archives)?;
        p.step(&plan.name, "install", || {
            chroot::install(ctx, merged, work, &layer.packages)
        })?;
        crate::plain::harvest(ctx.cache, &pkgs, &archives.join(crate::plain::DIR))?;
        debs::harvest(ctx.cache, &archives)?;
    }
    p.step(&plan.name, "files", || {
        apply_files(layer, merged)?;
        apply_installs(layer, merged)?;
        apply_units(layer, merged)
    })
}

/// The background initramfs of the base layer.
struct Speculation {
    handle: std::thread::JoinHandle<(Result<Option<crate::initramfs::Speculated>>, f64)>,
    /// How many layers (from the bottom) it was made over.
    layers: usize,
}

impl Speculation {
    fn start(cache: &Cache, lowers: &[PathBuf], top_key: &str, epoch: u64) -> Result<Speculation> {
        let root = cache.root.clone();
        let lowers = lowers.to_vec();
        let layers = lowers.len();
        let top_key = top_key.to_string();
        let work = cache.work_dir(&format!("initramfs-speculative-{layers}"))?;
        let handle = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            let r = crate::initramfs::speculate(&root, &lowers, &top_key, &work, epoch);
            (r, t.elapsed().as_secs_f64())
        });
        Ok(Speculation { handle, layers })
    }

    /// Wait for it; records its own duration as `initramfs-bg`.
    fn join(self, p: &mut Progress) -> Result<Option<crate::initramfs::Speculated>> {
        let t = std::time::Instant::now();
        let (r, secs) = self
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the background initramfs thread panicked"))?;
        for (step, seconds) in [
            ("initramfs-bg", secs),
            ("initramfs-wait", t.elapsed().as_secs_f64()),
        ] {
            p.timings.push(crate::progress::Timing {
                layer: FINALIZE.into(),
                step: step.into(),
                seconds,
            });
        }
        p.line(FINALIZE, &format!("background initramfs done ({secs:.1}s)"));
        r
    }
}

/// Last layer: the initramfs, made once for the final content (or taken
/// from the background run over the base when its inputs are unchanged).
fn finalize(
    ctx: &Ctx,
    plan: &LayerPlan,
    merged: &Path,
    lowers_top_first: &[PathBuf],
    p: &mut Progress,
    spec: &mut Option<Speculation>,
) -> Result<()> {
    use crate::initramfs::{cache_key, inputs_digest, install_cached, make, shadows};
    let root = &ctx.cache.root;
    let Some(digest) = inputs_digest(merged, ctx.img.epoch)? else {
        return Ok(());
    };
    // The background run applies when the layers above it changed none of
    // the inputs and replaced no file it may have copied.
    let mut key = None;
    if let Some(s) = spec.take() {
        let view = s.layers.min(lowers_top_first.len());
        match s.join(p) {
            Ok(Some(done)) if done.inputs == digest => {
                let (above, below) = lowers_top_first.split_at(lowers_top_first.len() - view);
                if !shadows(above, below)? {
                    key = Some(done.key);
                }
            }
            Ok(_) => {}
            Err(e) => p.line(
                FINALIZE,
                &format!("background initramfs failed ({e:#}); making it here"),
            ),
        }
    }
    let key = key.unwrap_or_else(|| cache_key(&digest, &plan.key));
    if p.step(FINALIZE, "initramfs-copy", || {
        install_cached(root, &key, merged)
    })? {
        p.line(
            FINALIZE,
            &format!("initramfs reused (inputs {})", &digest[..16]),
        );
        return Ok(());
    }
    let work = ctx.cache.work_dir("initramfs")?;
    p.step(FINALIZE, "initramfs", || {
        make(root, lowers_top_first, &key, &work, ctx.img.epoch)?;
        if !install_cached(root, &key, merged)? {
            bail!("the initramfs for inputs {digest} was made but is not in the cache");
        }
        Ok(())
    })
}

/// Copy `files/` over the root: owner root, mode from the exec bit.
fn apply_files(layer: &Layer, root: &Path) -> Result<()> {
    let src = layer.files_dir();
    if !src.is_dir() {
        return Ok(());
    }
    copy_tree(&src, root)
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let s = e.path();
        let d = dst.join(e.file_name());
        let meta = fs::symlink_metadata(&s)?;
        if meta.is_dir() {
            if fs::symlink_metadata(&d).is_err() {
                fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
                fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
            }
            copy_tree(&s, &d)?;
        } else if meta.file_type().is_symlink() {
            crate::fsutil::remove_any(&d)?;
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)
                .with_context(|| format!("creating {}", d.display()))?;
        } else {
            let bytes = fs::read(&s).with_context(|| format!("reading {}", s.display()))?;
            crate::fsutil::remove_any(&d)?;
            nib_host::write::write_file(&d, &bytes, normalized_mode(&meta))?;
            nix::unistd::chown(&d, Some(0.into()), Some(0.into()))?;
        }
    }
    Ok(())
}

fn apply_installs(layer: &Layer, root: &Path) -> Result<()> {
    for inst in &layer.install {
        let bytes = fs::read(&inst.src_path)
            .with_context(|| format!("reading {}", inst.src_path.display()))?;
        let dest = root.join(inst.dest.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        crate::fsutil::remove_any(&dest)?;
        nib_host::write::write_file(&dest, &bytes, inst.mode)?;
        nix::unistd::chown(&dest, Some(0.into()), Some(0.into()))?;
    }
    Ok(())
}

fn apply_units(layer: &Layer, root: &Path) -> Result<()> {
    for (verb, units) in [
        ("enable", &layer.units.enable),
        ("disable", &layer.units.disable),
        ("mask", &layer.units.mask),
    ] {
        if units.is_empty() {
            continue;
        }
        Cmd::new("chroot")
            .env_clear()
            .arg(root)
            .args(["systemctl", "--no-reload", "--quiet", verb])
            .args(units)
            .run()
            .with_context(|| {
                format!("layer {}: systemctl {verb} {}", layer.name, units.join(" "))
            })?;
    }
    Ok(())
}
