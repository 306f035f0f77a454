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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cache::InstalledPackage;
    use crate::image::{Distro, Install, Units};
    use std::path::PathBuf;

    /// An image of layers `names`, the first the base; layer i asks for
    /// package `p<i>` and has one install entry.
    pub(in crate::build) fn image(names: &[&str]) -> ImageDefinition {
        let layers = names
            .iter()
            .enumerate()
            .map(|(i, n)| Layer {
                name: n.to_string(),
                description: String::new(),
                dir: PathBuf::from(format!("/ws/layers/{n}")),
                packages: vec![format!("p{i}")],
                units: Units::default(),
                install: vec![Install {
                    src: format!("target/release/{n}-bin"),
                    src_path: PathBuf::from(format!("/ws/target/release/{n}-bin")),
                    dest: format!("/usr/bin/{n}"),
                    mode: 0o755,
                }],
                dpkg_filters: Vec::new(),
                definition_digest: format!("def-{n}"),
            })
            .collect();
        ImageDefinition {
            name: "test".into(),
            description: None,
            path: "/ws/images/test.toml".into(),
            root: "/ws".into(),
            suite: "bookworm".into(),
            distro: Distro::Debian,
            mirror: "http://deb.example/debian".into(),
            components: vec!["main".into()],
            keyring: "/ws/keyring.gpg".into(),
            architecture: "amd64".into(),
            epoch: 1_700_000_000,
            layers,
            file_digest: "image-file".into(),
        }
    }

    /// Every install source present, digest `src-<layer>`.
    fn sources(img: &ImageDefinition) -> Sources {
        Sources {
            keyring: Some("keyring".into()),
            installs: img
                .layers
                .iter()
                .map(|l| vec![Some(format!("src-{}", l.name))])
                .collect(),
        }
    }

    /// Packages p0..p<n> (p<i> depends on d<i>) and one required one.
    fn index(versions: &[(&str, &str)]) -> PackageIndex {
        let mut text = String::from("Package: base-files\nVersion: 12\nArchitecture: amd64\nPriority: required\n\nPackage: apt\nVersion: 2.6\nArchitecture: amd64\n\n");
        for (name, version) in versions {
            text.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\nDepends: d-{name}\n\nPackage: d-{name}\nVersion: 1\nArchitecture: amd64\n\n"
            ));
        }
        let mut idx = PackageIndex::default();
        idx.parse(&text, "amd64");
        idx
    }

    fn keys(plans: &[LayerPlan]) -> Vec<String> {
        plans.iter().map(|p| p.key.clone()).collect()
    }

    const NAMES: &[&str] = &["base", "db", "queue", "top"];

    fn plan(img: &ImageDefinition, src: &Sources, idx: Option<&PackageIndex>) -> Vec<String> {
        keys(&layers(img, src, idx, true).expect("plan"))
    }

    /// The first `same` keys equal, every one after differs.
    fn assert_moved_from(a: &[String], b: &[String], same: usize) {
        assert_eq!(a.len(), b.len());
        assert_eq!(a[..same], b[..same], "keys below the change");
        for i in same..a.len() {
            assert_ne!(a[i], b[i], "key {i} (at or above the change)");
        }
    }

    #[test]
    fn keys_are_one_per_layer_and_finalize_and_stable() {
        let img = image(NAMES);
        let src = sources(&img);
        let idx = index(&[("p0", "1"), ("p1", "1"), ("p2", "1"), ("p3", "1")]);
        let plans = layers(&img, &src, Some(&idx), true).expect("plan");
        let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base", "db", "queue", "top", FINALIZE]);
        assert_eq!(plans[4].layer, None);
        assert_eq!(plans[1].layer, Some(1));
        assert_eq!(keys(&plans), plan(&img, &src, Some(&idx)));
        // the closure grows layer by layer; finalize has the top's
        assert!(plans[0].closure.contains(&("d-p0".into(), "1".into())));
        assert!(plans[0]
            .closure
            .contains(&("base-files".into(), "12".into())));
        assert!(!plans[0].closure.iter().any(|(n, _)| n == "p1"));
        assert!(plans[1].closure.iter().any(|(n, _)| n == "p0"));
        assert_eq!(plans[4].closure, plans[3].closure);
    }

    #[test]
    fn a_changed_layer_definition_moves_its_key_and_every_key_above() {
        let img = image(NAMES);
        let src = sources(&img);
        let idx = index(&[("p0", "1"), ("p1", "1"), ("p2", "1"), ("p3", "1")]);
        let before = plan(&img, &src, Some(&idx));
        let mut changed = img.clone();
        changed.layers[2].definition_digest = "def-queue-2".into();
        assert_moved_from(&before, &plan(&changed, &src, Some(&idx)), 2);
        let mut changed = img.clone();
        changed.layers[0].definition_digest = "def-base-2".into();
        assert_moved_from(&before, &plan(&changed, &src, Some(&idx)), 0);
    }

    #[test]
    fn a_changed_install_source_moves_its_key_and_every_key_above() {
        let img = image(NAMES);
        let src = sources(&img);
        let idx = index(&[("p0", "1"), ("p1", "1"), ("p2", "1"), ("p3", "1")]);
        let before = plan(&img, &src, Some(&idx));
        let mut changed = src.clone();
        changed.installs[3][0] = Some("src-top-2".into());
        assert_moved_from(&before, &plan(&img, &changed, Some(&idx)), 3);
        // its destination and mode are hashed too
        let mut moved = img.clone();
        moved.layers[1].install[0].mode = 0o700;
        assert_moved_from(&before, &plan(&moved, &src, Some(&idx)), 1);
    }

    #[test]
    fn a_new_package_version_moves_the_layers_whose_closure_holds_it() {
        let img = image(NAMES);
        let src = sources(&img);
        let before = plan(
            &img,
            &src,
            Some(&index(&[
                ("p0", "1"),
                ("p1", "1"),
                ("p2", "1"),
                ("p3", "1"),
            ])),
        );
        let after = plan(
            &img,
            &src,
            Some(&index(&[
                ("p0", "1"),
                ("p1", "2"),
                ("p2", "1"),
                ("p3", "1"),
            ])),
        );
        assert_moved_from(&before, &after, 1);
    }

    #[test]
    fn image_wide_inputs_move_every_key() {
        let img = image(NAMES);
        let src = sources(&img);
        let idx = index(&[("p0", "1"), ("p1", "1"), ("p2", "1"), ("p3", "1")]);
        let before = plan(&img, &src, Some(&idx));
        let mut kr = src.clone();
        kr.keyring = None;
        assert_moved_from(&before, &plan(&img, &kr, Some(&idx)), 0);
        let mut epoch = img.clone();
        epoch.epoch += 1;
        assert_moved_from(&before, &plan(&epoch, &src, Some(&idx)), 0);
        // unresolved versions (no index) are keys of their own
        let unresolved = layers(&img, &src, None, true).expect("plan");
        assert!(unresolved.iter().all(|p| p.closure.is_empty()));
        assert_moved_from(&before, &keys(&unresolved), 0);
    }

    #[test]
    fn a_missing_install_source_fails_a_build_and_is_a_marker_in_a_plan() {
        let mut img = image(NAMES);
        img.layers[1].install[0].src = "target/release/nib-firstboot".into();
        let mut src = sources(&img);
        src.installs[1][0] = None;
        let err = layers(&img, &src, None, true).expect_err("required");
        assert_eq!(crate::error::exit_code(&err), 2);
        let msg = format!("{err:#}");
        assert!(
            msg.contains("/ws/layers/db/layer.toml: key `install[0].src`"),
            "{msg}"
        );
        assert!(
            msg.contains("cargo build --release -p nib-firstboot"),
            "{msg}"
        );
        let marked = keys(&layers(&img, &src, None, false).expect("plan"));
        let present = keys(&layers(&img, &sources(&img), None, false).expect("plan"));
        assert_moved_from(&present, &marked, 1);
    }

    #[test]
    fn definition_digest_covers_definitions_and_sources_not_versions() {
        let img = image(NAMES);
        let src = sources(&img);
        let d = definition_digest(&img, &src);
        assert!(d.starts_with("sha256:"));
        assert_eq!(d, definition_digest(&img, &src));
        let mut changed = src.clone();
        changed.installs[2][0] = None;
        assert_ne!(d, definition_digest(&img, &changed));
        let mut def = img.clone();
        def.layers[3].definition_digest = "other".into();
        assert_ne!(d, definition_digest(&def, &src));
        // the keyring is an input of the keys, not of the definition
        let mut kr = src.clone();
        kr.keyring = None;
        assert_eq!(d, definition_digest(&img, &kr));
    }

    #[test]
    fn sources_read_digests_present_files_and_notes_missing_ones() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut img = image(&["base", "top"]);
        let bin = t.path().join("top-bin");
        std::fs::write(&bin, b"binary").expect("write");
        img.layers[1].install[0].src_path = bin;
        img.layers[0].install[0].src_path = t.path().join("absent");
        img.keyring = t.path().join("no-keyring");
        let s = Sources::read(&img).expect("read");
        assert_eq!(s.keyring, None);
        assert_eq!(
            s.installs,
            vec![vec![None], vec![Some(crate::image::sha256_hex(b"binary"))]]
        );
    }

    #[test]
    fn packages_the_index_lacks_are_named_with_their_layer() {
        let img = image(&["base", "top"]);
        let idx = index(&[("p0", "1")]);
        let err = check_packages(&img, &idx).expect_err("p1 missing");
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(
            format!("{err:#}").ends_with("has no package p1 (layers/top/layer.toml)"),
            "{err:#}"
        );
        check_packages(&img, &index(&[("p0", "1"), ("p1", "1")])).expect("all there");
    }

    /// An installed package of architecture `all`.
    pub(crate) fn pkg(name: &str, version: &str) -> InstalledPackage {
        InstalledPackage {
            name: name.into(),
            version: version.into(),
            arch: "all".into(),
        }
    }

    /// The lock of image `test` (bookworm) with these packages.
    pub(crate) fn lock(packages: &[(&str, &str)]) -> Lock {
        Lock {
            image: "test".into(),
            suite: "bookworm".into(),
            packages: packages.iter().map(|(n, v)| pkg(n, v)).collect(),
        }
    }

    #[test]
    fn a_lock_the_index_no_longer_serves_is_refused_and_pins_hold_it() {
        let img = image(&["base"]);
        let idx = index(&[("p0", "2")]);
        let lock = lock(&[("p0", "1"), ("gone", "3"), ("apt", "2.6")]);
        let err = check_lock(&img, &lock, &idx).expect_err("moved");
        assert_eq!(crate::error::exit_code(&err), 2);
        let msg = format!("{err:#}");
        assert!(
            msg.ends_with(
                "--locked: the mirror lacks p0 1 (mirror has 2), gone 3 (mirror has none)"
            ),
            "{msg}"
        );
        let ok = Lock {
            packages: vec![pkg("p0", "2")],
            ..lock
        };
        check_lock(&img, &ok, &idx).expect("current");
        assert_eq!(
            lock_pins(&ok),
            "Package: p0\nPin: version 2\nPin-Priority: 1001\n\n"
        );
    }
}
