//! `manifest.json`, `SHA256SUMS` and `images/<name>.lock`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cache::InstalledPackage;
use crate::error::invalid;
use crate::outputs::OutputRecord;
use nib_host::write::write_file;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub image: String,
    pub builder: BuilderInfo,
    pub epoch: u64,
    pub suite: String,
    pub mirror: String,
    pub architecture: String,
    /// sha256 over the image file, every layer's definition and files, and
    /// the install sources: what the build was asked to do.
    pub definition_digest: String,
    pub layers: Vec<ManifestLayer>,
    pub packages: Vec<InstalledPackage>,
    pub outputs: Vec<OutputRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuilderInfo {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestLayer {
    pub name: String,
    pub key: String,
    /// `sha256:<hex>` of the layer blob (tar.zst, OCI whiteouts).
    pub digest: String,
    pub size: u64,
}

impl Manifest {
    pub fn read(out_dir: &Path) -> Result<Manifest> {
        let p = out_dir.join("manifest.json");
        let text = fs::read_to_string(&p)
            .map_err(|e| invalid(format!("{}: {e} (not a nib build output?)", p.display())))?;
        serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", p.display())))
    }

    pub fn write(&self, out_dir: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        write_file(&out_dir.join("manifest.json"), &bytes, 0o644)?;
        let mut sums = String::new();
        for o in &self.outputs {
            sums.push_str(&format!("{}  {}\n", o.sha256, o.path.display()));
        }
        Ok(write_file(
            &out_dir.join("SHA256SUMS"),
            sums.as_bytes(),
            0o644,
        )?)
    }

    pub fn package(&self, name: &str) -> Option<&InstalledPackage> {
        self.packages.iter().find(|p| p.name == name)
    }
}

/// `images/<name>.lock`: the exact package versions of a build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub image: String,
    pub suite: String,
    #[serde(rename = "package", default)]
    pub packages: Vec<InstalledPackage>,
}

impl Lock {
    pub fn read(path: &Path) -> Result<Lock> {
        let text = fs::read_to_string(path).map_err(|e| {
            invalid(format!(
                "{}: {e} (build once without --locked to write it)",
                path.display()
            ))
        })?;
        toml::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    pub fn render(&self) -> Result<String> {
        let body = toml::to_string(self).context("rendering lock")?;
        Ok(format!(
            "# Written by `nib build`: the exact packages of the last build.\n# `nib build --locked` installs exactly these or fails.\n{body}"
        ))
    }

    /// Write only when it changed (it lives in the source tree).
    pub fn write_if_changed(&self, path: &Path) -> Result<bool> {
        let text = self.render()?;
        if fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        write_file(path, text.as_bytes(), 0o644)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_roundtrip() {
        let t = tempfile::tempdir().expect("tempdir");
        let l = Lock {
            image: "x".into(),
            suite: "bookworm".into(),
            packages: vec![InstalledPackage {
                name: "a".into(),
                version: "1:2".into(),
                arch: "amd64".into(),
            }],
        };
        let p = t.path().join("x.lock");
        assert!(l.write_if_changed(&p).expect("write"));
        assert!(!l.write_if_changed(&p).expect("same"));
        assert_eq!(Lock::read(&p).expect("read"), l);
        fs::write(&p, "image = \"x\"\nsuite = \"b\"\nbogus = 1\n").expect("write");
        let err = Lock::read(&p).expect_err("bogus");
        assert_eq!(crate::error::exit_code(&err), 2);
    }
}
