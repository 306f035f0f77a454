//! `nib build`: image definition → layers (cached by key) → rootfs.tar.zst,
//! manifest.json, SHA256SUMS, images/<name>.lock.
//!
//! Every layer's key is known before anything is built: the package versions
//! come from the mirror's index, so an unchanged image costs one InRelease
//! download and no bootstrap at all.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::cache::{dpkg_status, Cache, InstalledPackage, LayerRecord};
use crate::cli::{BuildArgs, OutputKind};
use crate::error::invalid;
use crate::image::{normalized_mode, sha256_file, ImageDefinition, Layer};
use crate::index::{self, Package, PackageIndex};
use crate::manifest::{BuilderInfo, Lock, Manifest, ManifestLayer};
use crate::mounts::{enter_private_namespace, Mounts};
use crate::outputs::{OutputContext, OutputRecord};
use crate::progress::{Mode, Progress};
use crate::runner::{sh_quote, Run};
use crate::seal::{self, TreeKind};
use crate::{clean, debs};

/// Bump when a change to nib changes what a layer contains: every key moves.
pub const LAYER_FORMAT: &str = "nib-layer-format-5";

/// Name of the last layer nib adds itself: initramfs, final clean-up.
pub const FINALIZE: &str = "finalize";

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

/// One layer of the build, with its key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerPlan {
    pub name: String,
    pub key: String,
    /// Packages this layer asks for (after suite overrides).
    pub packages: Vec<String>,
    /// Index of the layer in the image (None for finalize).
    #[serde(skip)]
    pub layer: Option<usize>,
    /// Dependency closure of everything up to this layer (name → version).
    #[serde(skip)]
    pub closure: Vec<(String, String)>,
}

fn h_field(h: &mut Sha256, k: &str, v: &[u8]) {
    h.update(k.as_bytes());
    h.update(b"=");
    h.update((v.len() as u64).to_le_bytes());
    h.update(v);
    h.update(b"\n");
}

/// sha256 of the install sources of a layer; a missing source is an error
/// when building (`require`), a marker when planning.
pub fn install_digest(img: &ImageDefinition, layer: &Layer, require: bool) -> Result<String> {
    let mut h = Sha256::new();
    for (i, inst) in layer.install.iter().enumerate() {
        h_field(&mut h, "dest", inst.dest.as_bytes());
        h_field(&mut h, "mode", format!("{:o}", inst.mode).as_bytes());
        if inst.src_path.is_file() {
            h_field(&mut h, "src", sha256_file(&inst.src_path)?.as_bytes());
        } else if require {
            let hint = if inst.src.contains("nib-firstboot") {
                " (build it first: cargo build --release -p nib-firstboot)"
            } else {
                ""
            };
            return Err(invalid(format!(
                "{}: key `install[{i}].src`: {} does not exist{hint}",
                layer.dir.join("layer.toml").display(),
                inst.src_path.display()
            )));
        } else {
            h_field(&mut h, "src", b"missing");
        }
    }
    let _ = img;
    Ok(hex::encode(h.finalize()))
}

/// The image-wide inputs of the base layer.
fn image_key(img: &ImageDefinition) -> String {
    let mut h = Sha256::new();
    h_field(&mut h, "format", LAYER_FORMAT.as_bytes());
    h_field(&mut h, "suite", img.suite.as_bytes());
    h_field(&mut h, "mirror", img.mirror.as_bytes());
    h_field(&mut h, "components", img.components.join(",").as_bytes());
    h_field(&mut h, "arch", img.architecture.as_bytes());
    h_field(&mut h, "epoch", img.epoch.to_string().as_bytes());
    h_field(&mut h, "excludes", DPKG_EXCLUDES.join("\n").as_bytes());
    h_field(&mut h, "noops", BUILD_NOOPS.join("\n").as_bytes());
    let kr = sha256_file(&img.keyring).unwrap_or_else(|_| "missing".into());
    h_field(&mut h, "keyring", kr.as_bytes());
    hex::encode(h.finalize())
}

/// Keys of every layer (and finalize). `idx` None: versions unresolved
/// (offline plan without a cached index).
pub fn plan_layers(
    img: &ImageDefinition,
    idx: Option<&PackageIndex>,
    require_installs: bool,
) -> Result<Vec<LayerPlan>> {
    let mut parent = image_key(img);
    let mut roots: Vec<String> = idx.map(|i| i.minbase_roots()).unwrap_or_default();
    let mut out = Vec::new();
    for (li, layer) in img.layers.iter().enumerate() {
        roots.extend(layer.packages.iter().cloned());
        let closure: Vec<(String, String)> = match idx {
            Some(i) => i
                .closure(&roots)
                .into_iter()
                .map(|(n, p)| (n, p.version.clone()))
                .collect(),
            None => Vec::new(),
        };
        let mut h = Sha256::new();
        h_field(&mut h, "parent", parent.as_bytes());
        h_field(&mut h, "name", layer.name.as_bytes());
        h_field(&mut h, "base", if li == 0 { b"1" } else { b"0" });
        h_field(&mut h, "definition", layer.definition_digest.as_bytes());
        h_field(
            &mut h,
            "install",
            install_digest(img, layer, require_installs)?.as_bytes(),
        );
        let versions: String = if idx.is_some() {
            closure.iter().map(|(n, v)| format!("{n}={v}\n")).collect()
        } else {
            "unresolved".into()
        };
        h_field(&mut h, "versions", versions.as_bytes());
        let key = hex::encode(h.finalize());
        out.push(LayerPlan {
            name: layer.name.clone(),
            key: key.clone(),
            packages: layer.packages.clone(),
            layer: Some(li),
            closure,
        });
        parent = key;
    }
    let mut h = Sha256::new();
    h_field(&mut h, "parent", parent.as_bytes());
    h_field(&mut h, "name", FINALIZE.as_bytes());
    // bump when finalize's steps change
    h_field(&mut h, "finalize", b"2");
    out.push(LayerPlan {
        name: FINALIZE.into(),
        key: hex::encode(h.finalize()),
        packages: Vec::new(),
        layer: None,
        closure: out.last().map(|l| l.closure.clone()).unwrap_or_default(),
    });
    Ok(out)
}

/// What the build was asked to do, as one digest.
pub fn definition_digest(img: &ImageDefinition) -> Result<String> {
    let mut h = Sha256::new();
    h_field(&mut h, "image", img.file_digest.as_bytes());
    for l in &img.layers {
        h_field(&mut h, "layer", l.name.as_bytes());
        h_field(&mut h, "definition", l.definition_digest.as_bytes());
        h_field(&mut h, "install", install_digest(img, l, false)?.as_bytes());
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

pub struct Options {
    pub out: PathBuf,
    pub cache: PathBuf,
    /// Package store to use instead of `<cache>/debs` (verify shares it).
    pub debs: Option<PathBuf>,
    pub outputs: Vec<OutputKind>,
    pub locked: bool,
    pub write_lock: bool,
}

struct Ctx<'a> {
    img: &'a ImageDefinition,
    cache: &'a Cache,
    idx: &'a PackageIndex,
    lists: PathBuf,
    pins: Option<String>,
    /// libeatmydata for the image's suite (see nosync.rs), when it has one.
    nosync: Option<PathBuf>,
    /// Uncompressed package data in the cache, checked (see plain.rs).
    plain: std::collections::HashMap<String, PathBuf>,
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

/// Whether a cached layer may serve: its blob is there and every package it
/// installed is still the version the index offers.
fn reusable(cache: &Cache, idx: &PackageIndex, key: &str) -> Option<LayerRecord> {
    let rec = cache.record(key)?;
    if !cache.blob(&rec.digest).is_file() {
        return None;
    }
    let current = rec
        .packages
        .iter()
        .all(|p| idx.get(&p.name).is_some_and(|q| q.version == p.version));
    current.then_some(rec)
}

pub fn build(img: &ImageDefinition, opts: &Options, p: &mut Progress) -> Result<Manifest> {
    let cache = Cache::open(&opts.cache, opts.debs.as_deref())?;
    let (files, idx) = p.step("index", "resolve", || {
        let files = index::fetch(&cache.index(), img)?;
        let idx = PackageIndex::load(&files, &img.architecture)?;
        Ok((files, idx))
    })?;
    let wanted: Vec<(&str, &str)> = img
        .layers
        .iter()
        .flat_map(|l| {
            l.packages
                .iter()
                .map(move |p| (l.name.as_str(), p.as_str()))
        })
        .collect();
    let missing = index::missing(&idx, wanted);
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(l, p)| format!("{p} (layers/{l}/layer.toml)"))
            .collect();
        return Err(invalid(format!(
            "{} {} {} has no package {}",
            img.mirror,
            img.suite,
            img.components.join(","),
            list.join(", ")
        )));
    }
    let lock = if opts.locked {
        let lock = Lock::read(&img.lock_path())?;
        let mut gone = Vec::new();
        for lp in &lock.packages {
            match idx.get(&lp.name) {
                Some(q) if q.version == lp.version => {}
                Some(q) => gone.push(format!(
                    "{} {} (mirror has {})",
                    lp.name, lp.version, q.version
                )),
                None => gone.push(format!("{} {} (mirror has none)", lp.name, lp.version)),
            }
        }
        if !gone.is_empty() {
            return Err(invalid(format!(
                "{}: --locked: the mirror lacks {}",
                img.lock_path().display(),
                gone.join(", ")
            )));
        }
        Some(lock)
    } else {
        None
    };
    let plans = plan_layers(img, Some(&idx), true)?;
    let pins = lock.as_ref().map(|l| {
        l.packages
            .iter()
            .map(|p| {
                format!(
                    "Package: {}\nPin: version {}\nPin-Priority: 1001\n\n",
                    p.name, p.version
                )
            })
            .collect::<String>()
    });
    let mut ctx = Ctx {
        img,
        cache: &cache,
        idx: &idx,
        lists: files.dir.clone(),
        pins,
        nosync: None,
        plain: Default::default(),
    };

    let n = plans.len();
    let reuse: Vec<Option<LayerRecord>> = plans
        .iter()
        .map(|l| reusable(&cache, &idx, &l.key))
        .collect();
    let final_key = &plans[n - 1].key;
    let rootfs_key = format!("rootfs-{}-{final_key}", seal::ROOTFS_FORMAT);
    let rootfs_cached = cache
        .record(&rootfs_key)
        .filter(|r| cache.blob(&r.digest).is_file());
    let bootable = opts.outputs.iter().any(|k| *k != OutputKind::Rootfs);
    let need_all_trees = rootfs_cached.is_none() || bootable;
    let mut needs_tree: Vec<bool> = vec![need_all_trees; n];
    for i in 0..n {
        if reuse[i + 1..].iter().any(|r| r.is_none()) {
            needs_tree[i] = true;
        }
    }

    // Prefetch every package a layer to build may need, all at once.
    // (only layers that install packages need them: a change to a layer of
    // files only, like firstboot, touches no package)
    let to_build: Vec<usize> = (0..n)
        .filter(|i| reuse[*i].is_none())
        .filter(|i| {
            plans[*i]
                .layer
                .is_some_and(|l| l == 0 || !img.layers[l].packages.is_empty())
        })
        .collect();
    if !to_build.is_empty() {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for i in &to_build {
            names.extend(plans[*i].closure.iter().map(|(n, _)| n.as_str()));
        }
        let nosync_pkg = crate::nosync::package(&idx);
        let pkgs: Vec<&Package> = names
            .iter()
            .filter_map(|n| idx.get(n))
            .chain(nosync_pkg)
            .collect();
        let stats = p.step("packages", "download", || {
            debs::ensure(&cache, &img.mirror, &pkgs)
        })?;
        if let Some(pkg) = nosync_pkg {
            ctx.nosync = crate::nosync::library(&cache, pkg)?;
        }
        ctx.plain = p.step("packages", "plain", || {
            crate::plain::verified(&cache, &pkgs)
        })?;
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
    }

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
                    &cache,
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
            let mut ok = true;
            if needs_tree[i] && !tree.is_dir() {
                let tmp = cache.trees().join(format!(".x-{}", plan.key));
                let r = p.step(&plan.name, "extract", || {
                    seal::extract(&cache.blob(&rec.digest), &rec.digest, &tmp)
                });
                match r {
                    Ok(()) => fs::rename(&tmp, &tree)
                        .with_context(|| format!("renaming into {}", tree.display()))?,
                    Err(e) if e.downcast_ref::<seal::Corrupt>().is_some() => {
                        p.line(&plan.name, &format!("{e:#}; rebuilding"));
                        crate::fsutil::remove_any(&tmp)?;
                        crate::fsutil::remove_any(&cache.blob(&rec.digest))?;
                        cache.drop_record(&plan.key)?;
                        ok = false;
                    }
                    Err(e) => return Err(e),
                }
            }
            if ok {
                p.line(&plan.name, &format!("reused sha256:{}", &rec.digest[..16]));
                records.push(rec.clone());
                trees.push(tree);
                continue;
            }
            // a corrupt blob: make sure its packages are there to rebuild
            let pkgs: Vec<&Package> = plan
                .closure
                .iter()
                .filter_map(|(n, _)| idx.get(n))
                .collect();
            p.step("packages", "download", || {
                debs::ensure(&cache, &img.mirror, &pkgs)
            })?;
        }
        let pending = build_layer(&ctx, plan, &trees, p, &mut spec)?;
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
        records[i] = pending.finish(&cache, p)?;
    }
    for s in spec.take().into_iter().chain(old_specs) {
        // a superseded run's result is cached by its digest; only wait
        let _ = s.join(p);
    }

    // The whole root as one normalized tarball.
    let mut fresh_rootfs = false;
    let rootfs = match rootfs_cached {
        Some(r)
            if records
                .iter()
                .zip(&reuse)
                .all(|(a, b)| Some(a) == b.as_ref()) =>
        {
            p.line("rootfs", "reused");
            r
        }
        _ => {
            let work = cache.work_dir("rootfs")?;
            let merged = work.join("merged");
            let top_first: Vec<PathBuf> = trees.iter().rev().cloned().collect();
            let (sealed, stats) = p.step("rootfs", "seal", || {
                let mut m = Mounts::default();
                m.overlay_ro(&top_first, &merged)?;
                let s = seal::seal_chunked(&merged, img.epoch, &cache.blobs(), &cache.chunks())?;
                m.unmount_all()?;
                Ok(s)
            })?;
            p.line(
                "rootfs",
                &format!(
                    "built ({} of {} zstd frames reused)",
                    stats.reused, stats.chunks
                ),
            );
            let rec = LayerRecord {
                name: "rootfs".into(),
                key: rootfs_key.clone(),
                digest: sealed.digest,
                size: sealed.size,
                packages: Vec::new(),
            };
            cache.put_record(&rec)?;
            fresh_rootfs = true;
            rec
        }
    };

    let out_dir = opts.out.join(&img.name);
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut outputs = Vec::new();
    p.step("rootfs", "output", || {
        let blob = cache.blob(&rootfs.digest);
        // a blob taken from the cache is checked; one just sealed was hashed as written
        if !fresh_rootfs && !seal::verify_blob(&blob, &rootfs.digest)? {
            crate::fsutil::remove_any(&blob)?;
            cache.drop_record(&rootfs.key)?;
            bail!(
                "cached rootfs blob {} is corrupt; it was removed, run the build again",
                blob.display()
            );
        }
        let dest = out_dir.join("rootfs.tar.zst");
        let tmp = out_dir.join(".rootfs.tar.zst.tmp");
        crate::fsutil::remove_any(&tmp)?;
        if fs::hard_link(&blob, &tmp).is_err() {
            fs::copy(&blob, &tmp).with_context(|| format!("copying to {}", tmp.display()))?;
        }
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, &dest).with_context(|| format!("renaming into {}", dest.display()))?;
        outputs.push(OutputRecord {
            path: "rootfs.tar.zst".into(),
            sha256: rootfs.digest.clone(),
            size: rootfs.size,
        });
        Ok(())
    })?;
    if bootable {
        let extra = p.step("outputs", "outputs", || {
            let work = cache.work_dir("outputs")?;
            let merged = work.join("merged");
            let top_first: Vec<PathBuf> = trees.iter().rev().cloned().collect();
            let mut m = Mounts::default();
            m.overlay_ro(&top_first, &merged)?;
            let ctx = OutputContext {
                rootfs: &merged,
                out_dir: &out_dir,
                image: &img.name,
                epoch: img.epoch,
                rootfs_digest: &rootfs.digest,
            };
            let r = crate::outputs::build_outputs(&ctx, &opts.outputs)?;
            m.unmount_all()?;
            Ok(r)
        })?;
        outputs.extend(extra);
    }

    let packages = records
        .last()
        .map(|r| r.packages.clone())
        .unwrap_or_default();
    if let Some(lock) = &lock {
        let want: BTreeSet<_> = lock.packages.iter().collect();
        let got: BTreeSet<_> = packages.iter().collect();
        if want != got {
            let extra: Vec<String> = got
                .difference(&want)
                .map(|p| format!("{} {}", p.name, p.version))
                .collect();
            let lacking: Vec<String> = want
                .difference(&got)
                .map(|p| format!("{} {}", p.name, p.version))
                .collect();
            bail!(
                "--locked: the build differs from {}: not in the lock: [{}]; in the lock but not installed: [{}]",
                img.lock_path().display(),
                extra.join(", "),
                lacking.join(", ")
            );
        }
    }
    let manifest = Manifest {
        image: img.name.clone(),
        builder: BuilderInfo {
            name: "nib".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        epoch: img.epoch,
        suite: img.suite.clone(),
        mirror: img.mirror.clone(),
        architecture: img.architecture.clone(),
        definition_digest: definition_digest(img)?,
        layers: records
            .iter()
            .map(|r| ManifestLayer {
                name: r.name.clone(),
                key: r.key.clone(),
                digest: format!("sha256:{}", r.digest),
                size: r.size,
            })
            .collect(),
        packages: packages.clone(),
        outputs,
    };
    manifest.write(&out_dir)?;
    // work dirs are done with (their mounts are gone)
    crate::fsutil::remove_any(&cache.tmp())?;
    fs::create_dir_all(cache.tmp())?;
    if opts.write_lock && lock.is_none() {
        let l = Lock {
            image: img.name.clone(),
            suite: img.suite.clone(),
            packages,
        };
        if l.write_if_changed(&img.lock_path())? {
            p.line("lock", &format!("wrote {}", img.lock_path().display()));
        }
    }
    Ok(manifest)
}

fn apt_env(r: Run, epoch: u64) -> Run {
    r.env_clear()
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("LC_ALL", "C.UTF-8")
        .env("LANG", "C.UTF-8")
        .env("HOME", "/root")
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
    let (blobs, epoch) = (cache.blobs(), ctx.img.epoch);
    let handle = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let r = seal::seal(&dest, TreeKind::Layer, epoch, &blobs);
        (r, t.elapsed().as_secs_f64())
    });
    Ok(PendingSeal { rec, handle })
}

/// A layer built, its blob still being sealed in the background.
struct PendingSeal {
    rec: LayerRecord,
    handle: std::thread::JoinHandle<(Result<seal::Sealed>, f64)>,
}

impl PendingSeal {
    fn finish(self, cache: &Cache, p: &mut Progress) -> Result<LayerRecord> {
        let (r, secs) = self
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the seal thread of {} panicked", self.rec.name))?;
        let sealed = r.with_context(|| format!("sealing layer {}", self.rec.name))?;
        p.timings.push(crate::progress::Timing {
            layer: self.rec.name.clone(),
            step: "seal-bg".into(),
            seconds: secs,
        });
        let rec = LayerRecord {
            digest: sealed.digest,
            size: sealed.size,
            ..self.rec
        };
        cache.put_record(&rec)?;
        p.line(
            &rec.name,
            &format!(
                "sealed sha256:{} ({:.1} MB, {secs:.1}s in the background)",
                &rec.digest[..16],
                rec.size as f64 / 1e6
            ),
        );
        Ok(rec)
    }
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
    crate::fsutil::write_atomic(
        &bin.join("dpkg-deb"),
        crate::plain::wrapper(&host_real.display().to_string()).as_bytes(),
        0o755,
    )?;
    let root_wrapper = work.join("nib-dpkg-deb");
    crate::fsutil::write_atomic(
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
    let mut r = Run::new("mmdebstrap")
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
        crate::fsutil::write_atomic(&script, crate::nosync::dpkg_wrapper().as_bytes(), 0o755)?;
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
    p.step(&plan.name, "bootstrap", || r.run())?;
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
            let mut m = Mounts::default();
            let temps = chroot_setup(ctx, merged, work, &mut m)?;
            let mut run = apt_env(Run::new("chroot"), ctx.img.epoch);
            if ctx.nosync.is_some() {
                run = run.env("LD_PRELOAD", crate::nosync::IN_ROOT);
            }
            let r = run
                .arg(merged)
                .args([
                    "apt-get",
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "-o",
                    "Dpkg::Options::=--force-unsafe-io",
                    "-o",
                    "Dpkg::Options::=--force-confdef",
                    "-o",
                    "Dpkg::Options::=--force-confold",
                    "-o",
                    "Dpkg::Use-Pty=0",
                    "-o",
                    "APT::Sandbox::User=root",
                    "-o",
                    "Dir::Cache::pkgcache=",
                    // apt's cache of the package lists (not of the root's
                    // status, which each layer changes) beside the lists it
                    // caches, outside the image: parsed once per index
                    // instead of once per layer (~0.7 s each)
                    "-o",
                    "Dir::Cache::srcpkgcache=/var/lib/apt/lists/nib-srcpkgcache.bin",
                ])
                .args(&layer.packages)
                .run();
            m.unmount_all()?;
            chroot_teardown(merged, &temps)?;
            r
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

/// Programs that maintainer scripts run and that nib turns into a no-op
/// while packages install: what they make is made once by nib itself, or is
/// not kept in the image.
const BUILD_NOOPS: &[&str] = &[
    // the initramfs is made once, for the final content, in finalize
    "/usr/sbin/update-initramfs",
    // man-db indexes man pages the image does not ship (dpkg path filters)
    "/usr/bin/mandb",
    // no Python bytecode in the image (~34 MB): Python compiles a module
    // into __pycache__ the first time it is imported on the node
    "/usr/bin/py3compile",
    "/usr/bin/pypy3compile",
    // the MariaDB datadir is per node (clean empties it): nib-firstboot
    // runs mariadb-install-db on the node
    "/usr/bin/mysql_install_db",
    // ssh host keys are per node (clean removes any): nib-firstboot makes
    // them on the node; openssh-server's postinst would spend ~1 s on them
    "/usr/bin/ssh-keygen",
];

/// What a no-op program is while the image is built.
const NOOP_SCRIPT: &[u8] = b"#!/bin/sh\n# nib: not run while the image is built\nexit 0\n";

/// Shell commands for mmdebstrap's hooks ("$1" is the root): divert each of
/// BUILD_NOOPS away and put the no-op in its place; and the undo.
fn noop_hooks() -> (String, String) {
    let mut on = Vec::new();
    let mut off = Vec::new();
    for prog in BUILD_NOOPS {
        on.push(format!(
            "chroot \"$1\" dpkg-divert --quiet --local --rename --divert {prog}.nib-build --add {prog} && printf '%s' {} > \"$1{prog}\" && chmod 0755 \"$1{prog}\"",
            sh_quote(std::str::from_utf8(NOOP_SCRIPT).unwrap_or_default())
        ));
        off.push(format!(
            "rm -f \"$1{prog}\" && chroot \"$1\" dpkg-divert --quiet --local --rename --remove {prog}"
        ));
    }
    (on.join(" && "), off.join(" && "))
}

/// Mount what a chroot needs and make BUILD_NOOPS no-ops: a program already
/// there gets the no-op bind-mounted over it (nothing is copied up into the
/// layer); one a package may install now is diverted away (dpkg puts it at
/// `<path>.nib-build`) until `chroot_teardown`.
fn chroot_setup(ctx: &Ctx, root: &Path, work: &Path, m: &mut Mounts) -> Result<ChrootTemps> {
    let mut t = ChrootTemps::default();
    m.chroot_basics(root)?;
    m.bind(&ctx.lists, &root.join("var/lib/apt/lists"))?;
    let archives = work.join("archives");
    fs::create_dir_all(archives.join("partial"))?;
    m.bind(&archives, &root.join("var/cache/apt/archives"))?;
    let prc = root.join("usr/sbin/policy-rc.d");
    crate::fsutil::write_atomic(
        &prc,
        b"#!/bin/sh\n# nib: no service starts while building\nexit 101\n",
        0o755,
    )?;
    t.files.push(prc);
    let noop = work.join("nib-noop");
    crate::fsutil::write_atomic(&noop, NOOP_SCRIPT, 0o755)?;
    for prog in BUILD_NOOPS {
        let path = root.join(prog.trim_start_matches('/'));
        if fs::symlink_metadata(&path).is_ok() {
            m.bind(&noop, &path)?;
        } else {
            dpkg_divert(
                root,
                &["--divert", &format!("{prog}.nib-build"), "--add", prog],
            )?;
            crate::fsutil::write_atomic(&path, NOOP_SCRIPT, 0o755)?;
            t.diverted.push(prog);
        }
    }
    // dpkg-deb answering from the uncompressed package data (plain.rs): the
    // root's own seen at plain::REAL_IN_ROOT, the wrapper over it
    let dpkg_deb = root.join("usr/bin/dpkg-deb");
    if dpkg_deb.is_file() {
        let real = root.join(crate::plain::REAL_IN_ROOT.trim_start_matches('/'));
        crate::fsutil::write_atomic(&real, b"", 0o755)?;
        t.files.push(real.clone());
        m.bind(&dpkg_deb, &real)?;
        let wrapper = work.join("nib-dpkg-deb");
        crate::fsutil::write_atomic(
            &wrapper,
            crate::plain::wrapper(crate::plain::REAL_IN_ROOT).as_bytes(),
            0o755,
        )?;
        m.bind(&wrapper, &dpkg_deb)?;
    }
    let resolv = root.join("etc/resolv.conf");
    if Path::new("/etc/resolv.conf").is_file() && fs::symlink_metadata(&resolv).is_err() {
        fs::write(&resolv, b"")?;
        t.files.push(resolv.clone());
        m.bind(Path::new("/etc/resolv.conf"), &resolv)?;
    }
    if let Some(pins) = &ctx.pins {
        let pf = root.join("etc/apt/preferences.d/nib-lock");
        crate::fsutil::write_atomic(&pf, pins.as_bytes(), 0o644)?;
        t.files.push(pf);
    }
    if let Some(lib) = &ctx.nosync {
        let at = root.join(crate::nosync::IN_ROOT.trim_start_matches('/'));
        crate::fsutil::write_atomic(&at, b"", 0o644)?;
        t.files.push(at.clone());
        m.bind(lib, &at)?;
    }
    Ok(t)
}

/// mmdebstrap hooks ("$1" is the root) that put `script` in place of
/// `prog` once the Essential packages are extracted (before dpkg first
/// runs), as a local diversion (dpkg then unpacks the real one to
/// `<prog>.nib-build`), and undo it.
fn bootstrap_wrap(prog: &str, script: &Path) -> (String, String) {
    let on = format!(
        "mv \"$1{prog}\" \"$1{prog}.nib-build\" && cp {} \"$1{prog}\" && chmod 0755 \"$1{prog}\" && printf '%s\\n' {prog} {prog}.nib-build : >> \"$1/var/lib/dpkg/diversions\"",
        sh_quote(&script.display().to_string())
    );
    let off = format!(
        "rm -f \"$1{prog}\" && chroot \"$1\" dpkg-divert --quiet --local --rename --remove {prog}"
    );
    (on, off)
}

/// The build host's `name`, found in PATH.
fn host_program(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found in PATH"))
}

/// Placeholders `chroot_setup` put in a root, and the programs it diverted.
#[derive(Default)]
struct ChrootTemps {
    files: Vec<PathBuf>,
    diverted: Vec<&'static str>,
}

/// Undo `chroot_setup` once `m` is unmounted: placeholders go, diverted
/// programs (installed meanwhile or not) are put back under their names.
fn chroot_teardown(root: &Path, t: &ChrootTemps) -> Result<()> {
    remove_temps(&t.files)?;
    for prog in &t.diverted {
        crate::fsutil::remove_any(&root.join(prog.trim_start_matches('/')))?;
        dpkg_divert(root, &["--remove", prog])?;
    }
    Ok(())
}

/// A local, renaming dpkg-divert in `root`: the file moves with it.
fn dpkg_divert(root: &Path, args: &[&str]) -> Result<()> {
    Run::new("chroot")
        .arg(root)
        .args(["dpkg-divert", "--quiet", "--local", "--rename"])
        .args(args)
        .run()
}

fn remove_temps(temps: &[PathBuf]) -> Result<()> {
    for t in temps {
        crate::fsutil::remove_any(t)?;
    }
    Ok(())
}

/// The background initramfs of the base layer.
pub struct Speculation {
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
            crate::fsutil::write_atomic(&d, &bytes, normalized_mode(&meta))?;
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
        crate::fsutil::write_atomic(&dest, &bytes, inst.mode)?;
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
        Run::new("chroot")
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

/// Write a line to stderr unless quiet (used by verify).
pub fn say(quiet: bool, msg: &str) {
    if !quiet {
        let _ = writeln!(std::io::stderr(), "{msg}");
    }
}
