//! dpkg's path filters (`path-exclude=`/`path-include=` in dpkg.cfg), also
//! applied by nib to what the bootstrap unpacked before dpkg could see them.
//!
//! mmdebstrap extracts the Essential packages with `dpkg-deb | tar` before
//! dpkg runs in the chroot; given filters it pipes every package through a
//! Python tar filter, which took 9 of the base layer's 28 s here. nib instead
//! writes the filters where dpkg reads them (so every package dpkg unpacks
//! follows them) and removes, after the bootstrap, what that first
//! extraction left on paths the filters exclude.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// fnmatch(3) without flags, as dpkg matches filters: `*` and `?` also
/// match `/`; `[...]` classes with `!`/`^` negation and ranges; `\` escapes.
pub fn fnmatch(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    // iterative with one backtrack point for the last `*` seen
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => class(&p, pi, s[si]),
            Some('\\') if pi + 1 < p.len() => (p[pi + 1] == s[si]).then_some(pi + 2),
            Some(c) => (*c == s[si]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                si += 1;
            }
            (None, Some((sp, ss))) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A `[...]` class at `p[at]` against `c`: the index after it when `c`
/// matches; a `[` without its `]` is a literal `[`.
fn class(p: &[char], at: usize, c: char) -> Option<usize> {
    let mut i = at + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() && (p[i] != ']' || first) {
        first = false;
        let lo = p[i];
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            hit |= lo <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
    if i >= p.len() {
        return (c == '[').then_some(at + 1);
    }
    (hit != negate).then_some(i + 1)
}

/// Whether dpkg would leave `path` (absolute, as in a package) out: the
/// last filter that matches decides. `filters` are dpkg options such as
/// `path-exclude=/usr/share/doc/*`.
pub fn excluded(filters: &[&str], path: &str) -> bool {
    let mut out = false;
    for f in filters {
        if let Some(g) = f.strip_prefix("path-exclude=") {
            if fnmatch(g, path) {
                out = true;
            }
        } else if let Some(g) = f.strip_prefix("path-include=") {
            if fnmatch(g, path) {
                out = false;
            }
        }
    }
    out
}

/// The paths a file of a merged-/usr root is known by in packages: its own,
/// and `/lib/...` for `usr/lib/...` (and bin, sbin, lib64...).
fn package_paths(rel: &str) -> [Option<String>; 2] {
    let own = format!("/{rel}");
    let alias = ["bin/", "sbin/", "lib/", "lib32/", "lib64/", "libx32/"]
        .iter()
        .find(|d| rel.starts_with(&format!("usr/{d}")))
        .map(|_| format!("/{}", &rel[4..]));
    [Some(own), alias]
}

/// Remove from `root` what `filters` exclude (files and symlinks; then
/// excluded directories left empty). Returns how many entries went.
pub fn prune(root: &Path, filters: &[&str]) -> Result<usize> {
    fn walk(root: &Path, dir: &Path, filters: &[&str], n: &mut usize) -> Result<()> {
        for e in crate::fsutil::sorted_entries(dir)? {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .context("walking the root")?
                .to_string_lossy()
                .into_owned();
            let out = package_paths(&rel)
                .iter()
                .flatten()
                .any(|p| excluded(filters, p));
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(root, &path, filters, n)?;
                let empty = fs::read_dir(&path)?.next().is_none();
                if out && empty {
                    fs::remove_dir(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                    *n += 1;
                }
            } else if out {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                *n += 1;
            }
        }
        Ok(())
    }
    let mut n = 0;
    walk(root, root, filters, &mut n)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_as_dpkg_uses_it() {
        assert!(fnmatch("/usr/share/doc/*", "/usr/share/doc/bash/copyright"));
        assert!(fnmatch(
            "/usr/share/doc/*/copyright",
            "/usr/share/doc/bash/copyright"
        ));
        assert!(!fnmatch(
            "/usr/share/doc/*/copyright",
            "/usr/share/doc/bash/NEWS.gz"
        ));
        assert!(fnmatch(
            "/lib/modules/*/kernel/sound/*",
            "/lib/modules/6.1.0-50-amd64/kernel/sound/pci/x.ko"
        ));
        assert!(!fnmatch(
            "/lib/modules/*/kernel/sound/*",
            "/lib/modules/6.1/kernel/drivers/x.ko"
        ));
        assert!(fnmatch(
            "/lib/modules/*/kernel/lib/test_*",
            "/lib/modules/6.1/kernel/lib/test_bpf.ko"
        ));
        assert!(fnmatch("/a/?", "/a/b") && !fnmatch("/a/?", "/a/bc"));
        assert!(fnmatch("/a/[bc]x", "/a/cx") && !fnmatch("/a/[!bc]x", "/a/cx"));
        assert!(fnmatch("/a/[a-c]", "/a/b") && !fnmatch("/a/[a-c]", "/a/d"));
        assert!(fnmatch("/a/\\*", "/a/*") && !fnmatch("/a/\\*", "/a/b"));
        assert!(fnmatch("/a[", "/a[") && fnmatch("*", "") && !fnmatch("/a", "/ab"));
        assert!(fnmatch("/x/*/y/*", "/x/1/2/y/3"));
    }

    #[test]
    fn last_matching_filter_wins() {
        let f = [
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright",
        ];
        assert!(excluded(&f, "/usr/share/doc/bash/README"));
        assert!(!excluded(&f, "/usr/share/doc/bash/copyright"));
        assert!(!excluded(&f, "/usr/bin/bash"));
    }

    #[test]
    fn prune_removes_excluded_keeps_included_and_their_dirs() {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        for f in [
            "usr/share/doc/bash/README",
            "usr/share/doc/bash/copyright",
            "usr/share/man/man1/bash.1.gz",
            "usr/lib/modules/6.1/kernel/sound/snd.ko",
            "usr/lib/modules/6.1/kernel/fs/ext4.ko",
            "usr/bin/bash",
        ] {
            fs::create_dir_all(r.join(f).parent().expect("parent")).expect("mkdir");
            fs::write(r.join(f), b"x").expect("write");
        }
        let f = [
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright",
            "path-exclude=/usr/share/man/*",
            "path-exclude=/lib/modules/*/kernel/sound/*",
        ];
        let n = prune(r, &f).expect("prune");
        assert!(r.join("usr/share/doc/bash/copyright").is_file());
        assert!(!r.join("usr/share/doc/bash/README").exists());
        assert!(!r.join("usr/share/man/man1").exists());
        assert!(r.join("usr/share/man").is_dir(), "not excluded itself");
        // by its /lib alias; the directory itself is not excluded (as in dpkg)
        assert!(!r.join("usr/lib/modules/6.1/kernel/sound/snd.ko").exists());
        assert!(r.join("usr/lib/modules/6.1/kernel/sound").is_dir());
        assert!(r.join("usr/lib/modules/6.1/kernel/fs/ext4.ko").is_file());
        assert!(r.join("usr/bin/bash").is_file());
        assert_eq!(n, 4, "README, bash.1.gz, man1/, snd.ko");
    }
}
