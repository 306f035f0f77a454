//! Image definitions (`images/<name>.toml`) and layers (`layers/<name>/layer.toml`
//! and `files/`), parsed strictly: an unknown key, a missing layer or file,
//! an unknown suite is an [`invalid`] error naming the file and the key.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::invalid;

/// Distributions nib knows how to bootstrap; the suite decides which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    Debian,
    Ubuntu,
}

/// Suites nib accepts, with their distribution.
pub const SUITES: &[(&str, Distro)] = &[
    ("bullseye", Distro::Debian),
    ("bookworm", Distro::Debian),
    ("trixie", Distro::Debian),
    ("focal", Distro::Ubuntu),
    ("jammy", Distro::Ubuntu),
    ("noble", Distro::Ubuntu),
];

pub fn suite_distro(suite: &str) -> Option<Distro> {
    SUITES.iter().find(|(s, _)| *s == suite).map(|(_, d)| *d)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageFile {
    name: Option<String>,
    description: Option<String>,
    suite: String,
    mirror: String,
    components: Vec<String>,
    keyring: PathBuf,
    #[serde(default = "default_arch")]
    architecture: String,
    epoch: u64,
    layers: Vec<String>,
}

fn default_arch() -> String {
    "amd64".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerFile {
    description: String,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    suite: BTreeMap<String, SuiteOverride>,
    #[serde(default)]
    units: Units,
    #[serde(default)]
    install: Vec<InstallFile>,
    #[serde(default)]
    dpkg: DpkgFilters,
}

/// `[dpkg]`: dpkg path filters on top of nib's own (docs, man pages,
/// locales). Only the first layer may set them: they are written by the
/// bootstrap and so hold for every package unpacked in the image.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DpkgFilters {
    #[serde(default)]
    path_exclude: Vec<String>,
    #[serde(default)]
    path_include: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteOverride {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// systemd units a layer enables, disables or masks (in the image, offline).
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Units {
    #[serde(default)]
    pub enable: Vec<String>,
    #[serde(default)]
    pub disable: Vec<String>,
    #[serde(default)]
    pub mask: Vec<String>,
}

impl Units {
    pub fn is_empty(&self) -> bool {
        self.enable.is_empty() && self.disable.is_empty() && self.mask.is_empty()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallFile {
    src: String,
    dest: String,
    mode: Option<String>,
}

/// A file taken from the workspace (e.g. the `nib-firstboot` binary) and
/// installed at `dest` with `mode`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Install {
    /// As written in layer.toml, relative to the workspace root.
    pub src: String,
    /// Absolute path of `src`.
    #[serde(skip)]
    pub src_path: PathBuf,
    pub dest: String,
    pub mode: u32,
}

/// One layer, resolved for the image's suite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layer {
    pub name: String,
    pub description: String,
    #[serde(skip)]
    pub dir: PathBuf,
    /// Packages after per-suite overrides, in definition order.
    pub packages: Vec<String>,
    pub units: Units,
    pub install: Vec<Install>,
    /// dpkg options (`path-exclude=…`, then `path-include=…`) from `[dpkg]`.
    pub dpkg_filters: Vec<String>,
    /// sha256 of layer.toml, the `files/` tree and nothing else (install
    /// sources are hashed when the build needs them: they may not exist yet
    /// when only planning).
    #[serde(skip)]
    pub definition_digest: String,
}

impl Layer {
    pub fn files_dir(&self) -> PathBuf {
        self.dir.join("files")
    }
}

/// An image definition with its layers resolved for its suite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageDefinition {
    pub name: String,
    pub description: Option<String>,
    #[serde(skip)]
    pub path: PathBuf,
    /// Directory holding `images/` and `layers/`: install sources are relative to it.
    #[serde(skip)]
    pub root: PathBuf,
    pub suite: String,
    pub distro: Distro,
    pub mirror: String,
    pub components: Vec<String>,
    pub keyring: PathBuf,
    pub architecture: String,
    pub epoch: u64,
    pub layers: Vec<Layer>,
    /// sha256 of the image file.
    #[serde(skip)]
    pub file_digest: String,
}

fn valid_package_name(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(c))
}

fn valid_unit_name(u: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        ".service",
        ".socket",
        ".timer",
        ".target",
        ".path",
        ".mount",
        ".automount",
        ".slice",
    ];
    SUFFIXES.iter().any(|s| u.len() > s.len() && u.ends_with(s))
        && u.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"@._-:\\".contains(&c))
}

fn valid_layer_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

impl ImageDefinition {
    /// Parse and validate `path` and every layer it names. No network, no root.
    pub fn load(path: &Path) -> Result<Self> {
        let shown = path.display();
        let bytes = fs::read(path).map_err(|e| invalid(format!("{shown}: cannot read: {e}")))?;
        let text =
            String::from_utf8(bytes.clone()).map_err(|_| invalid(format!("{shown}: not UTF-8")))?;
        let file: ImageFile =
            toml::from_str(&text).map_err(|e| invalid(format!("{shown}: {}", toml_msg(&e))))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| invalid(format!("{shown}: file name is not UTF-8")))?
            .to_string();
        let name = file.name.clone().unwrap_or(stem);
        if !valid_layer_name(&name) {
            return Err(invalid(format!(
                "{shown}: key `name`: {name:?} must be lower-case letters, digits, - or _"
            )));
        }
        let distro = suite_distro(&file.suite).ok_or_else(|| {
            let known: Vec<&str> = SUITES.iter().map(|(s, _)| *s).collect();
            invalid(format!(
                "{shown}: key `suite`: unknown suite {:?} (known: {})",
                file.suite,
                known.join(", ")
            ))
        })?;
        if !(file.mirror.starts_with("http://") || file.mirror.starts_with("https://")) {
            return Err(invalid(format!(
                "{shown}: key `mirror`: {:?} must be an http:// or https:// URL",
                file.mirror
            )));
        }
        if file.components.is_empty()
            || file.components.iter().any(|c| {
                c.is_empty()
                    || !c
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/')
            })
        {
            return Err(invalid(format!(
                "{shown}: key `components`: give at least one component such as \"main\""
            )));
        }
        if !file.keyring.is_absolute() {
            return Err(invalid(format!(
                "{shown}: key `keyring`: {} must be an absolute path",
                file.keyring.display()
            )));
        }
        if !["amd64", "arm64"].contains(&file.architecture.as_str()) {
            return Err(invalid(format!(
                "{shown}: key `architecture`: {:?} is not supported (amd64, arm64)",
                file.architecture
            )));
        }
        if file.epoch == 0 {
            return Err(invalid(format!(
                "{shown}: key `epoch`: must be a positive SOURCE_DATE_EPOCH"
            )));
        }
        if file.layers.is_empty() {
            return Err(invalid(format!(
                "{shown}: key `layers`: name at least one layer"
            )));
        }
        let abs = fs::canonicalize(path).with_context(|| format!("resolving {shown}"))?;
        let root = abs
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| invalid(format!("{shown}: must live in <workspace>/images/")))?
            .to_path_buf();
        let mut layers = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, lname) in file.layers.iter().enumerate() {
            if !valid_layer_name(lname) {
                return Err(invalid(format!(
                    "{shown}: key `layers[{i}]`: {lname:?} is not a layer name"
                )));
            }
            if !seen.insert(lname.clone()) {
                return Err(invalid(format!(
                    "{shown}: key `layers[{i}]`: layer {lname:?} listed twice"
                )));
            }
            let dir = root.join("layers").join(lname);
            if !dir.join("layer.toml").is_file() {
                return Err(invalid(format!(
                    "{shown}: key `layers[{i}]`: no layer {lname:?} ({} does not exist)",
                    dir.join("layer.toml").display()
                )));
            }
            let layer = load_layer(&root, &dir, lname, &file.suite)?;
            if i > 0 && !layer.dpkg_filters.is_empty() {
                return Err(invalid(format!(
                    "{}: key `dpkg`: only the first layer of {shown} ({:?}) may set dpkg path filters: they are set by the bootstrap and apply to every package of the image",
                    dir.join("layer.toml").display(),
                    file.layers[0]
                )));
            }
            layers.push(layer);
        }
        Ok(ImageDefinition {
            name,
            description: file.description,
            path: path.to_path_buf(),
            root,
            suite: file.suite,
            distro,
            mirror: file.mirror.trim_end_matches('/').to_string(),
            components: file.components,
            keyring: file.keyring,
            architecture: file.architecture,
            epoch: file.epoch,
            layers,
            file_digest: sha256_hex(text.as_bytes()),
        })
    }

    /// `images/<name>.lock` beside the definition.
    pub fn lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }

    /// All packages of all layers, in order, without duplicates.
    pub fn all_packages(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in &self.layers {
            for p in &l.packages {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
        out
    }
}

fn toml_msg(e: &toml::de::Error) -> String {
    // toml's Display spans several lines with a caret; keep it but on one
    // logical message so the path stays in front.
    e.to_string().trim_end().to_string()
}

fn load_layer(root: &Path, dir: &Path, name: &str, suite: &str) -> Result<Layer> {
    let path = dir.join("layer.toml");
    let shown = path.display();
    let text = fs::read_to_string(&path).map_err(|e| invalid(format!("{shown}: {e}")))?;
    let file: LayerFile =
        toml::from_str(&text).map_err(|e| invalid(format!("{shown}: {}", toml_msg(&e))))?;
    for (i, p) in file.packages.iter().enumerate() {
        if !valid_package_name(p) {
            return Err(invalid(format!(
                "{shown}: key `packages[{i}]`: {p:?} is not a Debian package name"
            )));
        }
    }
    let mut packages = file.packages.clone();
    for (s, ov) in &file.suite {
        if suite_distro(s).is_none() {
            return Err(invalid(format!(
                "{shown}: key `suite.{s}`: unknown suite {s:?}"
            )));
        }
        for (i, p) in ov.add.iter().chain(ov.remove.iter()).enumerate() {
            if !valid_package_name(p) {
                return Err(invalid(format!(
                    "{shown}: key `suite.{s}` (entry {i}): {p:?} is not a Debian package name"
                )));
            }
        }
        for p in &ov.remove {
            if !file.packages.contains(p) {
                return Err(invalid(format!(
                    "{shown}: key `suite.{s}.remove`: {p:?} is not in `packages`"
                )));
            }
        }
    }
    if let Some(ov) = file.suite.get(suite) {
        packages.retain(|p| !ov.remove.contains(p));
        for p in &ov.add {
            if !packages.contains(p) {
                packages.push(p.clone());
            }
        }
    }
    for (key, list) in [
        ("units.enable", &file.units.enable),
        ("units.disable", &file.units.disable),
        ("units.mask", &file.units.mask),
    ] {
        for u in list {
            if !valid_unit_name(u) {
                return Err(invalid(format!(
                    "{shown}: key `{key}`: {u:?} is not a unit name"
                )));
            }
        }
    }
    let mut dpkg_filters = Vec::new();
    for (key, list) in [
        ("path_exclude", &file.dpkg.path_exclude),
        ("path_include", &file.dpkg.path_include),
    ] {
        for (i, g) in list.iter().enumerate() {
            // one line of dpkg.cfg: an absolute glob, nothing dpkg would split
            if !g.starts_with('/')
                || g.len() < 2
                || g.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(format!(
                    "{shown}: key `dpkg.{key}[{i}]`: {g:?} must be an absolute path glob without spaces, such as \"/lib/modules/*/kernel/sound/*\""
                )));
            }
            dpkg_filters.push(format!("{}={g}", key.replace('_', "-")));
        }
    }
    let mut install = Vec::new();
    for (i, f) in file.install.iter().enumerate() {
        let key = format!("install[{i}]");
        let src = Path::new(&f.src);
        if f.src.is_empty()
            || src.is_absolute()
            || src
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(invalid(format!(
                "{shown}: key `{key}.src`: {:?} must be a path inside the workspace",
                f.src
            )));
        }
        if !f.dest.starts_with('/')
            || Path::new(&f.dest)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            || f.dest.ends_with('/')
        {
            return Err(invalid(format!(
                "{shown}: key `{key}.dest`: {:?} must be an absolute file path",
                f.dest
            )));
        }
        let mode = match &f.mode {
            None => 0o644,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    invalid(format!(
                        "{shown}: key `{key}.mode`: {m:?} is not an octal mode such as \"0755\""
                    ))
                })?,
        };
        install.push(Install {
            src: f.src.clone(),
            src_path: root.join(src),
            dest: f.dest.clone(),
            mode,
        });
    }
    let mut h = Sha256::new();
    h.update(b"layer.toml\0");
    h.update(text.as_bytes());
    h.update(b"\0files\0");
    let files = dir.join("files");
    if files.exists() {
        hash_tree(&files, &files, &mut h)?;
    }
    Ok(Layer {
        name: name.to_string(),
        description: file.description,
        dir: dir.to_path_buf(),
        packages,
        units: file.units,
        install,
        dpkg_filters,
        definition_digest: hex::encode(h.finalize()),
    })
}

/// Mode a file from `files/` gets in the image: git keeps only the exec bit,
/// so the checkout's umask must not leak into the image.
pub fn normalized_mode(meta: &fs::Metadata) -> u32 {
    if meta.is_dir() || meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

fn hash_tree(base: &Path, dir: &Path, h: &mut Sha256) -> Result<()> {
    for e in crate::fsutil::sorted_entries(dir)? {
        let p = e.path();
        let meta = fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        let rel = p.strip_prefix(base).unwrap_or(&p);
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        let ft = meta.file_type();
        if ft.is_symlink() {
            h.update(b"l");
            h.update(
                fs::read_link(&p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        } else if ft.is_dir() {
            h.update(b"d");
            hash_tree(base, &p, h)?;
        } else if ft.is_file() {
            h.update(format!("f{:o}:{}:", normalized_mode(&meta), meta.size()).as_bytes());
            h.update(sha256_file(&p)?.as_bytes());
        } else {
            return Err(invalid(format!(
                "{}: only files, directories and symlinks may live in a layer's files/",
                p.display()
            )));
        }
        h.update(b"\0");
    }
    Ok(())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, s).expect("write");
    }

    fn workspace() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        write(
            &t.path().join("images/x.toml"),
            "suite = \"focal\"\nmirror = \"http://archive.ubuntu.com/ubuntu\"\ncomponents = [\"main\"]\nkeyring = \"/k.gpg\"\nepoch = 1\nlayers = [\"base\"]\n",
        );
        write(
            &t.path().join("layers/base/layer.toml"),
            "description = \"b\"\npackages = [\"systemd\", \"linux-image-amd64\"]\n[suite.focal]\nremove = [\"linux-image-amd64\"]\nadd = [\"linux-image-generic\"]\n",
        );
        t
    }

    #[test]
    fn suite_overrides_apply() {
        let t = workspace();
        let img = ImageDefinition::load(&t.path().join("images/x.toml")).expect("load");
        assert_eq!(img.name, "x");
        assert_eq!(
            img.layers[0].packages,
            vec!["systemd", "linux-image-generic"]
        );
    }

    #[test]
    fn unknown_key_is_invalid_and_named() {
        let t = workspace();
        let p = t.path().join("layers/base/layer.toml");
        write(&p, "description = \"b\"\npackagez = []\n");
        let err = ImageDefinition::load(&t.path().join("images/x.toml")).expect_err("must fail");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("layer.toml") && msg.contains("packagez"),
            "{msg}"
        );
        assert_eq!(crate::error::exit_code(&err), 2);
    }

    #[test]
    fn unknown_suite_and_missing_layer() {
        let t = workspace();
        let img = t.path().join("images/x.toml");
        let text = fs::read_to_string(&img).expect("read");
        write(&img, &text.replace("focal", "sid-ish"));
        let msg = format!("{:#}", ImageDefinition::load(&img).expect_err("suite"));
        assert!(msg.contains("`suite`") && msg.contains("sid-ish"), "{msg}");
        write(&img, &text.replace("[\"base\"]", "[\"base\", \"nope\"]"));
        let err = ImageDefinition::load(&img).expect_err("layer");
        let msg = format!("{err:#}");
        assert!(msg.contains("nope") && msg.contains("layers[1]"), "{msg}");
        assert_eq!(crate::error::exit_code(&err), 2);
    }

    #[test]
    fn dpkg_filters_first_layer_only_and_checked() {
        let t = workspace();
        let img = t.path().join("images/x.toml");
        let base = t.path().join("layers/base/layer.toml");
        let text = fs::read_to_string(&base).expect("read");
        write(
            &base,
            &format!("{text}[dpkg]\npath_exclude = [\"/lib/modules/*/kernel/sound/*\"]\npath_include = [\"/lib/modules/*/kernel/sound/core/*\"]\n"),
        );
        let d = ImageDefinition::load(&img).expect("load");
        assert_eq!(
            d.layers[0].dpkg_filters,
            vec![
                "path-exclude=/lib/modules/*/kernel/sound/*",
                "path-include=/lib/modules/*/kernel/sound/core/*"
            ]
        );
        // a relative glob, or one with a space, would be a broken dpkg.cfg line
        for bad in ["lib/modules/*", "/lib/modules/* x"] {
            write(&base, &format!("{text}[dpkg]\npath_exclude = [{bad:?}]\n"));
            let err = ImageDefinition::load(&img).expect_err("bad glob");
            let msg = format!("{err:#}");
            assert!(
                msg.contains("dpkg.path_exclude[0]") && msg.contains("layer.toml"),
                "{msg}"
            );
            assert_eq!(crate::error::exit_code(&err), 2);
        }
        // a second layer cannot set them: the bootstrap already ran
        write(&base, &text);
        write(
            &t.path().join("layers/top/layer.toml"),
            "description = \"t\"\n[dpkg]\npath_exclude = [\"/usr/share/zoneinfo/*\"]\n",
        );
        let itext = fs::read_to_string(&img).expect("read");
        write(&img, &itext.replace("[\"base\"]", "[\"base\", \"top\"]"));
        let err = ImageDefinition::load(&img).expect_err("second layer");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("layers/top/layer.toml")
                && msg.contains("`dpkg`")
                && msg.contains("\"base\""),
            "{msg}"
        );
        assert_eq!(crate::error::exit_code(&err), 2);
    }

    #[test]
    fn files_change_definition_digest() {
        let t = workspace();
        let img = t.path().join("images/x.toml");
        let a = ImageDefinition::load(&img).expect("a").layers[0]
            .definition_digest
            .clone();
        write(&t.path().join("layers/base/files/etc/motd"), "hi\n");
        let b = ImageDefinition::load(&img).expect("b").layers[0]
            .definition_digest
            .clone();
        write(&t.path().join("layers/base/files/etc/motd"), "ho\n");
        let c = ImageDefinition::load(&img).expect("c").layers[0]
            .definition_digest
            .clone();
        assert_ne!(a, b);
        assert_ne!(b, c);
    }
}
