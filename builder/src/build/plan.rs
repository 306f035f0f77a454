//! Plan: every layer's key from the image definition, the digests of the
//! files it names and the package index. Pure: the files are read first
//! (`Sources::read`), so the same inputs always give the same keys, and
//! every key is known before anything is built.

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::chroot::BUILD_NOOPS;
use super::execute::DPKG_EXCLUDES;
use crate::error::invalid;
use crate::image::{sha256_file, ImageDefinition, Layer};
use crate::index::{self, PackageIndex};
use crate::manifest::Lock;

/// Bump when a change to nib changes what a layer contains: every key moves.
pub const LAYER_FORMAT: &str = "nib-layer-format-5";

/// Name of the last layer nib adds itself: initramfs, final clean-up.
pub const FINALIZE: &str = "finalize";

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

/// The files a plan hashes besides the definition: the keyring and every
/// install source (sha256 hex; None when it is not there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    keyring: Option<String>,
    /// Per layer, per `install` entry.
    installs: Vec<Vec<Option<String>>>,
}

impl Sources {
    pub fn read(img: &ImageDefinition) -> Result<Sources> {
        let installs = img
            .layers
            .iter()
            .map(|l| {
                l.install
                    .iter()
                    .map(|i| {
                        // not there yet is a state the plan reports, not an error
                        if i.src_path.is_file() {
                            sha256_file(&i.src_path).map(Some)
                        } else {
                            Ok(None)
                        }
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Sources {
            keyring: sha256_file(&img.keyring).ok(),
            installs,
        })
    }
}

fn h_field(h: &mut Sha256, k: &str, v: &[u8]) {
    h.update(k.as_bytes());
    h.update(b"=");
    h.update((v.len() as u64).to_le_bytes());
    h.update(v);
    h.update(b"\n");
}

/// sha256 of the install sources of a layer (`digests`: its entries of
/// `Sources`); a missing one hashes as a marker.
pub fn install_digest(layer: &Layer, digests: &[Option<String>]) -> String {
    let mut h = Sha256::new();
    for (i, inst) in layer.install.iter().enumerate() {
        h_field(&mut h, "dest", inst.dest.as_bytes());
        h_field(&mut h, "mode", format!("{:o}", inst.mode).as_bytes());
        let src = digests.get(i).cloned().flatten();
        h_field(
            &mut h,
            "src",
            src.as_deref().unwrap_or("missing").as_bytes(),
        );
    }
    hex::encode(h.finalize())
}

/// A build needs every install source (a plan only notes the missing).
fn require_installs(layer: &Layer, digests: &[Option<String>]) -> Result<()> {
    for (i, inst) in layer.install.iter().enumerate() {
        if digests.get(i).is_some_and(Option::is_some) {
            continue;
        }
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
    }
    Ok(())
}

fn layer_sources(sources: &Sources, li: usize) -> &[Option<String>] {
    sources.installs.get(li).map(Vec::as_slice).unwrap_or(&[])
}

/// The image-wide inputs of the base layer.
fn image_key(img: &ImageDefinition, sources: &Sources) -> String {
    let mut h = Sha256::new();
    h_field(&mut h, "format", LAYER_FORMAT.as_bytes());
    h_field(&mut h, "suite", img.suite.as_bytes());
    h_field(&mut h, "mirror", img.mirror.as_bytes());
    h_field(&mut h, "components", img.components.join(",").as_bytes());
    h_field(&mut h, "arch", img.architecture.as_bytes());
    h_field(&mut h, "epoch", img.epoch.to_string().as_bytes());
    h_field(&mut h, "excludes", DPKG_EXCLUDES.join("\n").as_bytes());
    h_field(&mut h, "noops", BUILD_NOOPS.join("\n").as_bytes());
    let kr = sources.keyring.as_deref().unwrap_or("missing");
    h_field(&mut h, "keyring", kr.as_bytes());
    hex::encode(h.finalize())
}

/// Keys of every layer (and finalize). `idx` None: versions unresolved
/// (offline plan without a cached index).
pub fn layers(
    img: &ImageDefinition,
    sources: &Sources,
    idx: Option<&PackageIndex>,
    require: bool,
) -> Result<Vec<LayerPlan>> {
    let mut parent = image_key(img, sources);
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
        let digests = layer_sources(sources, li);
        if require {
            require_installs(layer, digests)?;
        }
        let mut h = Sha256::new();
        h_field(&mut h, "parent", parent.as_bytes());
        h_field(&mut h, "name", layer.name.as_bytes());
        h_field(&mut h, "base", if li == 0 { b"1" } else { b"0" });
        h_field(&mut h, "definition", layer.definition_digest.as_bytes());
        h_field(&mut h, "install", install_digest(layer, digests).as_bytes());
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
pub fn definition_digest(img: &ImageDefinition, sources: &Sources) -> String {
    let mut h = Sha256::new();
    h_field(&mut h, "image", img.file_digest.as_bytes());
    for (li, l) in img.layers.iter().enumerate() {
        h_field(&mut h, "layer", l.name.as_bytes());
        h_field(&mut h, "definition", l.definition_digest.as_bytes());
        let install = install_digest(l, layer_sources(sources, li));
        h_field(&mut h, "install", install.as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Every package a layer asks for must be in the mirror's index.
pub fn check_packages(img: &ImageDefinition, idx: &PackageIndex) -> Result<()> {
    let wanted = img.layers.iter().flat_map(|l| {
        l.packages
            .iter()
            .map(move |p| (l.name.as_str(), p.as_str()))
    });
    let missing = index::missing(idx, wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing
        .iter()
        .map(|(l, p)| format!("{p} (layers/{l}/layer.toml)"))
        .collect();
    Err(invalid(format!(
        "{} {} {} has no package {}",
        img.mirror,
        img.suite,
        img.components.join(","),
        list.join(", ")
    )))
}

/// `--locked`: every locked version must still be the one the index offers.
pub fn check_lock(img: &ImageDefinition, lock: &Lock, idx: &PackageIndex) -> Result<()> {
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
    if gone.is_empty() {
        return Ok(());
    }
    Err(invalid(format!(
        "{}: --locked: the mirror lacks {}",
        img.lock_path().display(),
        gone.join(", ")
    )))
}

/// apt preferences that hold every package at its locked version.
pub fn lock_pins(lock: &Lock) -> String {
    lock.packages
        .iter()
        .map(|p| {
            format!(
                "Package: {}\nPin: version {}\nPin-Priority: 1001\n\n",
                p.name, p.version
            )
        })
        .collect()
}
