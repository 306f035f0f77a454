//! The mirror's package index: `InRelease` (verified with gpgv against the
//! image's keyring) and the `Packages` files it lists, kept in the cache under
//! the names apt gives them, so the same directory serves as the chroot's
//! `/var/lib/apt/lists`. From it nib resolves package versions before
//! building anything (cache keys, lock checks, `.deb` prefetch).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::image::{sha256_file, sha256_hex, ImageDefinition};
use nib_host::Cmd;

/// apt's file name prefix for a mirror URL (URItoFileName without the scheme).
pub fn apt_list_prefix(mirror: &str) -> String {
    let rest = mirror
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(mirror)
        .trim_end_matches('/');
    rest.replace('/', "_")
}

/// Where the lists of one mirror+suite live in the cache.
pub fn lists_dir(cache_index: &Path, img: &ImageDefinition) -> PathBuf {
    cache_index.join(format!(
        "{}_{}_{}",
        apt_list_prefix(&img.mirror),
        img.suite,
        img.architecture
    ))
}

fn inrelease_name(img: &ImageDefinition) -> String {
    format!(
        "{}_dists_{}_InRelease",
        apt_list_prefix(&img.mirror),
        img.suite
    )
}

fn packages_name(img: &ImageDefinition, comp: &str) -> String {
    format!(
        "{}_dists_{}_{}_binary-{}_Packages",
        apt_list_prefix(&img.mirror),
        img.suite,
        comp.replace('/', "_"),
        img.architecture
    )
}

/// The verified index files on disk.
#[derive(Debug, Clone)]
pub struct IndexFiles {
    pub dir: PathBuf,
    pub inrelease_sha256: String,
    pub packages: Vec<PathBuf>,
}

/// The signed part of a clearsigned InRelease.
fn signed_text(clearsigned: &str) -> &str {
    let body = clearsigned
        .split_once("\n\n")
        .map(|(_, b)| b)
        .unwrap_or(clearsigned);
    body.split("\n-----BEGIN PGP SIGNATURE-----")
        .next()
        .unwrap_or(body)
}

/// `path -> (sha256, size)` from the SHA256 section of a Release file.
fn release_sha256(text: &str) -> HashMap<String, (String, u64)> {
    let mut out = HashMap::new();
    let mut in_sha = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_sha = line.trim_end() == "SHA256:";
            continue;
        }
        if in_sha {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 3 {
                if let Ok(size) = f[1].parse() {
                    out.insert(f[2].to_string(), (f[0].to_string(), size));
                }
            }
        }
    }
    out
}

fn download(url: &str, dest: &Path) -> Result<()> {
    Cmd::new("curl")
        .args(["-fsSL", "--retry", "3", "--connect-timeout", "15", "-o"])
        .arg(dest)
        .arg(url)
        .run()
        .with_context(|| format!("downloading {url}"))
}

/// Fetch InRelease, verify it, and make sure every Packages file it lists
/// for our components is present and matches its digest (downloading only
/// what changed). Network.
pub fn fetch(cache_index: &Path, img: &ImageDefinition) -> Result<IndexFiles> {
    if !img.keyring.is_file() {
        return Err(crate::error::invalid(format!(
            "{}: key `keyring`: {} does not exist (install the distribution's keyring package)",
            img.path.display(),
            img.keyring.display()
        )));
    }
    let dir = lists_dir(cache_index, img);
    fs::create_dir_all(dir.join("partial"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join("partial").join("InRelease.new");
    let url = format!("{}/dists/{}/InRelease", img.mirror, img.suite);
    download(&url, &tmp)?;
    Cmd::new("gpgv")
        .arg("--keyring")
        .arg(&img.keyring)
        .arg(&tmp)
        .env("GNUPGHOME", dir.join("partial"))
        .run()
        .with_context(|| format!("verifying {url} with {}", img.keyring.display()))?;
    let text = fs::read_to_string(&tmp).with_context(|| format!("reading {}", tmp.display()))?;
    let sums = release_sha256(signed_text(&text));
    let mut packages = Vec::new();
    for comp in &img.components {
        let base = format!("{comp}/binary-{}/Packages", img.architecture);
        let (want, _) = sums.get(&base).cloned().ok_or_else(|| {
            crate::error::invalid(format!(
                "{}: key `components`: the mirror's {} InRelease lists no {base} (unknown component or architecture)",
                img.path.display(),
                img.suite
            ))
        })?;
        let dest = dir.join(packages_name(img, comp));
        if dest.is_file() && sha256_file(&dest)? == want {
            packages.push(dest);
            continue;
        }
        let (ext, tool) = if sums.contains_key(&format!("{base}.xz")) {
            ("xz", "xz")
        } else if sums.contains_key(&format!("{base}.gz")) {
            ("gz", "gzip")
        } else {
            bail!("{url} lists no compressed {base}");
        };
        let (csum, _) = &sums[&format!("{base}.{ext}")];
        // by-hash: immune to the mirror updating between InRelease and this.
        let curl_url = format!(
            "{}/dists/{}/{comp}/binary-{}/by-hash/SHA256/{csum}",
            img.mirror, img.suite, img.architecture
        );
        let ctmp = dir.join("partial").join(format!("Packages.{ext}"));
        if download(&curl_url, &ctmp).is_err() {
            download(
                &format!("{}/dists/{}/{base}.{ext}", img.mirror, img.suite),
                &ctmp,
            )?;
        }
        if &sha256_file(&ctmp)? != csum {
            bail!(
                "{base}.{ext} from {}: sha256 does not match InRelease",
                img.mirror
            );
        }
        let raw = Cmd::new(tool)
            .arg("-dc")
            .arg(&ctmp)
            .output()
            .map(|o| o.stdout)?;
        if sha256_hex(&raw) != want {
            bail!(
                "{base} from {}: sha256 does not match InRelease",
                img.mirror
            );
        }
        nib_host::write::write_file(&dest, &raw, 0o644)?;
        let _ = fs::remove_file(&ctmp);
        packages.push(dest);
    }
    let inrelease = dir.join(inrelease_name(img));
    fs::rename(&tmp, &inrelease)
        .with_context(|| format!("renaming into {}", inrelease.display()))?;
    Ok(IndexFiles {
        dir,
        inrelease_sha256: sha256_hex(text.as_bytes()),
        packages,
    })
}

/// The index last fetched for this image, if any (offline: `nib plan`).
pub fn cached(cache_index: &Path, img: &ImageDefinition) -> Option<IndexFiles> {
    let dir = lists_dir(cache_index, img);
    let inrelease = dir.join(inrelease_name(img));
    let text = fs::read_to_string(&inrelease).ok()?;
    let packages: Vec<PathBuf> = img
        .components
        .iter()
        .map(|c| dir.join(packages_name(img, c)))
        .collect();
    if !packages.iter().all(|p| p.is_file()) {
        return None;
    }
    Some(IndexFiles {
        dir,
        inrelease_sha256: sha256_hex(text.as_bytes()),
        packages,
    })
}

/// One binary package of the index.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// Depends + Pre-Depends: groups of alternatives, names only.
    pub depends: Vec<Vec<String>>,
    pub provides: Vec<String>,
    pub essential: bool,
    pub required: bool,
}

impl Package {
    /// The name apt gives the file in /var/cache/apt/archives.
    pub fn archive_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

#[derive(Debug, Default)]
pub struct PackageIndex {
    pub packages: Vec<Package>,
    by_name: HashMap<String, usize>,
    providers: HashMap<String, Vec<usize>>,
}

fn parse_relation(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.trim().split([' ', '(', '[', '<']).next()?.trim();
                    let name = name.split(':').next()?;
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

impl PackageIndex {
    pub fn load(files: &IndexFiles, arch: &str) -> Result<Self> {
        let mut idx = PackageIndex::default();
        for p in &files.packages {
            let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            idx.parse(&text, arch);
        }
        Ok(idx)
    }

    pub fn parse(&mut self, text: &str, arch: &str) {
        for para in text.split("\n\n") {
            let mut pkg = Package {
                name: String::new(),
                version: String::new(),
                arch: String::new(),
                filename: String::new(),
                size: 0,
                sha256: String::new(),
                depends: Vec::new(),
                provides: Vec::new(),
                essential: false,
                required: false,
            };
            for line in para.lines() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    continue;
                }
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                let v = v.trim();
                match k {
                    "Package" => pkg.name = v.to_string(),
                    "Version" => pkg.version = v.to_string(),
                    "Architecture" => pkg.arch = v.to_string(),
                    "Filename" => pkg.filename = v.to_string(),
                    "Size" => pkg.size = v.parse().unwrap_or(0),
                    "SHA256" => pkg.sha256 = v.to_string(),
                    "Depends" | "Pre-Depends" => pkg.depends.extend(parse_relation(v)),
                    "Provides" => pkg.provides = parse_relation(v).into_iter().flatten().collect(),
                    "Essential" => pkg.essential = v == "yes",
                    "Priority" => pkg.required = v == "required",
                    _ => {}
                }
            }
            if pkg.name.is_empty() || !(pkg.arch == arch || pkg.arch == "all") {
                continue;
            }
            // One suite, one version per package; a repeat keeps the first.
            if self.by_name.contains_key(&pkg.name) {
                continue;
            }
            let i = self.packages.len();
            self.by_name.insert(pkg.name.clone(), i);
            for v in &pkg.provides {
                self.providers.entry(v.clone()).or_default().push(i);
            }
            self.packages.push(pkg);
        }
    }

    pub fn get(&self, name: &str) -> Option<&Package> {
        self.by_name.get(name).map(|i| &self.packages[*i])
    }

    /// Real package or something a package provides.
    pub fn knows(&self, name: &str) -> bool {
        self.by_name.contains_key(name) || self.providers.contains_key(name)
    }

    /// What `mmdebstrap --variant=minbase` installs before any `--include`.
    pub fn minbase_roots(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .packages
            .iter()
            .filter(|p| p.essential || p.required)
            .map(|p| p.name.clone())
            .collect();
        v.push("apt".into());
        v.sort();
        v
    }

    /// Dependency closure (Depends + Pre-Depends, no Recommends, as nib
    /// installs), taking an alternative already chosen when there is one,
    /// else the first real one. It approximates apt's choice; it is used for
    /// cache keys and prefetching, and the real installed set is recorded
    /// from dpkg after the build.
    pub fn closure(&self, roots: &[String]) -> BTreeMap<String, &Package> {
        let mut chosen: BTreeSet<usize> = BTreeSet::new();
        let mut queue: VecDeque<usize> = VecDeque::new();
        for r in roots {
            if let Some(i) = self.pick(r) {
                if chosen.insert(i) {
                    queue.push_back(i);
                }
            }
        }
        let mut provided: BTreeSet<String> = BTreeSet::new();
        let mut set_names: BTreeSet<String> = BTreeSet::new();
        for i in &chosen {
            set_names.insert(self.packages[*i].name.clone());
            provided.extend(self.packages[*i].provides.iter().cloned());
        }
        while let Some(i) = queue.pop_front() {
            for group in &self.packages[i].depends {
                if group
                    .iter()
                    .any(|a| set_names.contains(a) || provided.contains(a))
                {
                    continue;
                }
                if let Some(j) = group.iter().find_map(|a| self.pick(a)) {
                    if chosen.insert(j) {
                        set_names.insert(self.packages[j].name.clone());
                        provided.extend(self.packages[j].provides.iter().cloned());
                        queue.push_back(j);
                    }
                }
            }
        }
        chosen
            .into_iter()
            .map(|i| (self.packages[i].name.clone(), &self.packages[i]))
            .collect()
    }

    fn pick(&self, name: &str) -> Option<usize> {
        if let Some(i) = self.by_name.get(name) {
            return Some(*i);
        }
        let provs = self.providers.get(name)?;
        provs
            .iter()
            .min_by(|a, b| self.packages[**a].name.cmp(&self.packages[**b].name))
            .copied()
    }
}

/// Names the index lacks among `wanted`, as `(layer, package)`.
pub fn missing<'a>(
    idx: &PackageIndex,
    wanted: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    wanted
        .into_iter()
        .filter(|(_, p)| !idx.knows(p))
        .map(|(l, p)| (l.to_string(), p.to_string()))
        .collect()
}

pub fn no_index_error(img: &ImageDefinition) -> anyhow::Error {
    anyhow!(
        "no package index for {} {} in the cache",
        img.mirror,
        img.suite
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKGS: &str = "Package: a\nVersion: 1:1.0-1\nArchitecture: amd64\nDepends: b (>= 1), c | d\nFilename: pool/a.deb\nSize: 10\nSHA256: aa\n\nPackage: b\nVersion: 2\nArchitecture: all\nPre-Depends: vb\nPriority: required\nSHA256: bb\n\nPackage: c\nVersion: 3\nArchitecture: i386\n\nPackage: d\nVersion: 4\nArchitecture: amd64\nProvides: vb\n\nPackage: e\nVersion: 5\nArchitecture: amd64\nProvides: vb\n";

    #[test]
    fn closure_takes_first_real_alternative_and_providers() {
        let mut idx = PackageIndex::default();
        idx.parse(PKGS, "amd64");
        let c = idx.closure(&["a".to_string()]);
        let names: Vec<&str> = c.keys().map(|s| s.as_str()).collect();
        // c is i386 only, so `c | d` takes d, which also provides vb.
        assert_eq!(names, vec!["a", "b", "d"]);
        assert_eq!(
            idx.get("a").expect("a").archive_name(),
            "a_1%3a1.0-1_amd64.deb"
        );
        assert_eq!(idx.minbase_roots(), vec!["apt", "b"]);
        assert!(idx.knows("vb") && !idx.knows("zz"));
    }

    #[test]
    fn release_parsing_and_prefix() {
        let r = "Origin: x\nSHA256:\n 0123 42 main/binary-amd64/Packages\n 4567 7 main/binary-amd64/Packages.xz\nMD5Sum:\n ff 1 other\n";
        let s = release_sha256(r);
        assert_eq!(s["main/binary-amd64/Packages"], ("0123".to_string(), 42));
        assert!(!s.contains_key("other"));
        assert_eq!(
            apt_list_prefix("http://deb.debian.org/debian/"),
            "deb.debian.org_debian"
        );
        let signed = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: D\n-----BEGIN PGP SIGNATURE-----\nxx\n";
        assert_eq!(signed_text(signed), "Origin: D");
    }
}
