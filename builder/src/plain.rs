//! Package data kept uncompressed in the package cache, so a rebuild does
//! not pay xz again.
//!
//! dpkg reads a package's files through `dpkg-deb --fsys-tarfile`, which
//! decompresses its data.tar.xz: ~12 s of CPU for this image's 1.1 GB, on
//! every build that installs the packages. While nib installs packages,
//! `dpkg-deb` is a small wrapper (the chroot's own, diverted or bind-mounted
//! over; the host's, first in mmdebstrap's PATH) that answers
//! `--fsys-tarfile <dir>/<name>.deb` from `<dir>/nib-plain/<name>.deb` when
//! that exists, and otherwise runs the real one and keeps a copy of what it
//! produced there. After the install nib stores each new copy beside the
//! .deb store under the package's sha256 and the copy's own
//! (`<cache>/debs/plain/<deb sha256>.<tar sha256>.tar`), and checks that
//! digest every time it hands the copy out again; a corrupt one is removed
//! (dpkg then decompresses the .deb, and a new copy is kept). The bytes
//! dpkg reads are the same either way: --fsys-tarfile only decompresses.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cache::Cache;
use crate::index::Package;

/// Beside the .debs in apt's archives dir: what the wrapper reads and writes.
pub const DIR: &str = "nib-plain";

/// Where the real dpkg-deb is seen in a layer's root while the wrapper is
/// bind-mounted over /usr/bin/dpkg-deb.
pub const REAL_IN_ROOT: &str = "/usr/lib/nib-dpkg-deb";

/// The wrapper, for a real dpkg-deb at `real`.
pub fn wrapper(real: &str) -> String {
    format!(
        r#"#!/bin/sh
# nib: dpkg-deb while packages install (see nib's plain.rs): --fsys-tarfile
# from the package cache's uncompressed copy, or kept as one.
real={real}
if [ "$#" = 2 ] && [ "$1" = --fsys-tarfile ]; then
	# apt hands dpkg a directory of links (NNN-<name>.deb) to the archives
	deb="$2"
	[ -L "$deb" ] && deb=$(readlink -f "$deb")
	d="${{deb%/*}}/{DIR}"
	f="$d/${{deb##*/}}"
	if [ -f "$f" ]; then
		exec cat "$f"
	fi
	if [ -d "$d" ]; then
		t="$d/.${{deb##*/}}.$$"
		if {{ "$real" --fsys-tarfile "$deb" || : >"$t.failed"; }} | tee "$t" &&
			! [ -e "$t.failed" ] && mv -f "$t" "$f"; then
			exit 0
		fi
		rm -f "$t" "$t.failed"
		exit 2
	fi
fi
exec "$real" "$@"
"#,
        real = nib_host::cmd::sh_quote(real)
    )
}

/// The stored copies of `pkgs` whose digest holds, by package sha256; the
/// others are removed.
pub fn verified(cache: &Cache, pkgs: &[&Package]) -> Result<HashMap<String, PathBuf>> {
    let dir = cache.plain_blobs();
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(HashMap::new());
    };
    let wanted: std::collections::HashSet<&str> = pkgs.iter().map(|p| p.sha256.as_str()).collect();
    let mut candidates: Vec<(String, PathBuf, String)> = Vec::new();
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((deb, tar)) = name.strip_suffix(".tar").and_then(|s| s.split_once('.')) else {
            continue;
        };
        if wanted.contains(deb) {
            candidates.push((deb.to_string(), e.path(), tar.to_string()));
        }
    }
    let checks: Vec<(PathBuf, String)> = candidates
        .iter()
        .map(|(_, p, t)| (p.clone(), t.clone()))
        .collect();
    let mut out = HashMap::new();
    for ((deb, path, _), ok) in candidates.into_iter().zip(crate::debs::par_verify(&checks)) {
        if ok {
            out.insert(deb, path);
        } else {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(out)
}

/// Give the wrapper `archives/nib-plain/`, with the verified copies of
/// `pkgs` linked in under apt's names (the others it will keep a copy of).
pub fn link(verified: &HashMap<String, PathBuf>, pkgs: &[&Package], archives: &Path) -> Result<()> {
    let dir = archives.join(DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for p in pkgs {
        if let Some(src) = verified.get(&p.sha256) {
            let dest = dir.join(p.archive_name());
            if !dest.exists() && fs::hard_link(src, &dest).is_err() {
                fs::copy(src, &dest).with_context(|| format!("copying {}", src.display()))?;
            }
        }
    }
    Ok(())
}

/// Store the copies the wrapper made in `dir` (`archives/nib-plain`) for
/// `pkgs`; what is not a new copy of one of them is left for the work
/// dir's removal. Returns how many were stored.
pub fn harvest(cache: &Cache, pkgs: &[&Package], dir: &Path) -> Result<usize> {
    let mut new: Vec<(PathBuf, &Package)> = Vec::new();
    for p in pkgs {
        let f = dir.join(p.archive_name());
        // a hard link is a copy handed out from the store
        if fs::symlink_metadata(&f).is_ok_and(|m| m.is_file() && m.nlink() == 1) {
            new.push((f, p));
        }
    }
    if new.is_empty() {
        return Ok(0);
    }
    let st = cache.plain_blobs();
    fs::create_dir_all(&st).with_context(|| format!("creating {}", st.display()))?;
    let digests = crate::debs::par_digest(&new.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>());
    for ((f, p), digest) in new.iter().zip(digests) {
        let dest = st.join(format!("{}.{}.tar", p.sha256, digest?));
        if dest.exists() {
            continue;
        }
        if fs::rename(f, &dest).is_err() {
            // the package cache may be on another file system
            let tmp = st.join(format!(".{}.tmp", p.sha256));
            fs::copy(f, &tmp).with_context(|| format!("copying {}", f.display()))?;
            fs::rename(&tmp, &dest).with_context(|| format!("storing {}", dest.display()))?;
        }
    }
    Ok(new.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sha256_hex;
    use std::process::Command;

    fn pkg(name: &str, sha: &str) -> Package {
        Package {
            name: name.into(),
            version: "1.0".into(),
            arch: "all".into(),
            filename: format!("pool/{name}.deb"),
            size: 1,
            sha256: sha.into(),
            depends: Vec::new(),
            provides: Vec::new(),
            essential: false,
            required: false,
        }
    }

    /// The wrapper over a fake "real" dpkg-deb that prints the deb's bytes
    /// reversed (and fails on a file named bad.deb).
    fn setup(t: &Path) -> (PathBuf, PathBuf) {
        let real = t.join("real-dpkg-deb");
        fs::write(
            &real,
            "#!/bin/sh\n[ \"${2##*/}\" = bad_1.0_all.deb ] && { printf partial; exit 2; }\n\
             [ \"$1\" = --fsys-tarfile ] && { rev \"$2\"; exit 0; }\necho \"other $*\"\n",
        )
        .expect("real");
        let w = t.join("dpkg-deb");
        fs::write(&w, wrapper(&real.display().to_string())).expect("wrapper");
        for f in [&real, &w] {
            Command::new("chmod")
                .arg("755")
                .arg(f)
                .status()
                .expect("chmod");
        }
        let archives = t.join("archives");
        fs::create_dir_all(archives.join(DIR)).expect("mkdir");
        (w, archives)
    }

    fn run(w: &Path, args: &[&Path]) -> (bool, String) {
        let o = Command::new(w).args(args).output().expect("wrapper runs");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }

    #[test]
    fn wrapper_keeps_answers_and_refuses_failures() {
        let t = tempfile::tempdir().expect("tmp");
        let (w, archives) = setup(t.path());
        let deb = archives.join("a_1.0_all.deb");
        fs::write(&deb, "abc\n").expect("deb");
        let fsys = Path::new("--fsys-tarfile");
        // first: the real one runs, its output is kept under the deb's name
        assert_eq!(run(&w, &[fsys, &deb]), (true, "cba\n".into()));
        let kept = archives.join(DIR).join("a_1.0_all.deb");
        assert_eq!(fs::read_to_string(&kept).expect("kept"), "cba\n");
        // then: answered from the copy (the real one is not asked)
        fs::write(&kept, "from the copy").expect("write");
        assert_eq!(run(&w, &[fsys, &deb]), (true, "from the copy".into()));
        // apt's links to the archives (NNN-<name>.deb in a temp dir) too
        let links = t.path().join("apt-dpkg-install");
        fs::create_dir_all(&links).expect("mkdir");
        std::os::unix::fs::symlink(&deb, links.join("000-a_1.0_all.deb")).expect("link");
        assert_eq!(
            run(&w, &[fsys, &links.join("000-a_1.0_all.deb")]),
            (true, "from the copy".into())
        );
        // other operations go to the real one untouched
        assert_eq!(
            run(&w, &[Path::new("--control"), &deb, Path::new("x")]),
            (true, format!("other --control {} x\n", deb.display()))
        );
        // a failing real dpkg-deb fails the wrapper and leaves no copy
        let bad = archives.join("bad_1.0_all.deb");
        fs::write(&bad, "x").expect("deb");
        assert!(!run(&w, &[fsys, &bad]).0);
        let left: Vec<String> = fs::read_dir(archives.join(DIR))
            .expect("ls")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["a_1.0_all.deb".to_string()]);
        // without nib-plain/ beside the deb: the real one, nothing kept
        let other = t.path().join("elsewhere");
        fs::create_dir_all(&other).expect("mkdir");
        fs::write(other.join("a_1.0_all.deb"), "xyz\n").expect("deb");
        assert_eq!(
            run(&w, &[fsys, &other.join("a_1.0_all.deb")]),
            (true, "zyx\n".into())
        );
        assert_eq!(fs::read_dir(&other).expect("ls").count(), 1);
    }

    #[test]
    fn copies_are_stored_checked_and_dropped_when_corrupt() {
        let t = tempfile::tempdir().expect("tmp");
        let cache = Cache::open(&t.path().join("cache"), None).expect("cache");
        let (a, b) = (pkg("a", &"a".repeat(64)), pkg("b", &"b".repeat(64)));
        let dir = t.path().join("archives").join(DIR);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(a.archive_name()), "tar of a").expect("a");
        fs::write(dir.join(".b_1.0_all.deb.123"), "partial").expect("partial");
        assert_eq!(harvest(&cache, &[&a, &b], &dir).expect("harvest"), 1);
        let stored =
            cache
                .plain_blobs()
                .join(format!("{}.{}.tar", a.sha256, sha256_hex(b"tar of a")));
        assert_eq!(fs::read_to_string(&stored).expect("stored"), "tar of a");
        let v = verified(&cache, &[&a, &b]).expect("verified");
        assert_eq!(v.get(&a.sha256), Some(&stored));
        assert_eq!(v.len(), 1);
        // handed out as a hard link, which harvest does not store again
        let arch2 = t.path().join("archives2");
        link(&v, &[&a, &b], &arch2).expect("link");
        let linked = arch2.join(DIR).join(a.archive_name());
        assert_eq!(fs::read_to_string(&linked).expect("linked"), "tar of a");
        assert_eq!(harvest(&cache, &[&a], &arch2.join(DIR)).expect("again"), 0);
        // corrupt: detected by its digest and removed
        fs::remove_file(&linked).expect("unlink");
        fs::write(&stored, "tar of A").expect("corrupt");
        assert!(verified(&cache, &[&a]).expect("verified").is_empty());
        assert!(!stored.exists());
    }
}
