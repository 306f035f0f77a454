//! The boot pieces an image carries: kernel, initrd, systemd-boot. Taken from
//! the image's own packages so the outputs boot what was built and locked.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use crate::error::invalid;

#[derive(Debug, Clone)]
pub struct BootFiles {
    /// e.g. `6.1.0-50-amd64`
    pub kernel_version: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Resolve `rel` (absolute or relative to the image root) inside `root`,
/// following symlinks as the image would see them, never leaving `root`.
pub fn resolve_in(root: &Path, rel: &Path) -> Result<PathBuf> {
    use std::collections::VecDeque;
    let mut cur = PathBuf::new(); // relative to root
    let mut todo: VecDeque<std::ffi::OsString> = VecDeque::new();
    let push_front = |todo: &mut VecDeque<std::ffi::OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => todo.push_front(n.to_owned()),
                Component::ParentDir => todo.push_front("..".into()),
                Component::RootDir => todo.push_front("/".into()),
                Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    push_front(&mut todo, rel);
    let mut hops = 0;
    while let Some(name) = todo.pop_front() {
        if name == "/" {
            cur = PathBuf::new();
        } else if name == ".." {
            cur.pop();
        } else {
            let next = cur.join(&name);
            match fs::symlink_metadata(root.join(&next)) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(invalid(format!(
                            "{}: too many symlinks below {}",
                            rel.display(),
                            root.display()
                        )));
                    }
                    let target = fs::read_link(root.join(&next))?;
                    push_front(&mut todo, &target);
                }
                _ => cur = next,
            }
        }
    }
    Ok(root.join(cur))
}

/// Kernel and initrd of the image: `/vmlinuz` and `/initrd.img` (Debian's
/// and Ubuntu's symlinks to the default kernel) or the only one in /boot.
pub fn find(rootfs: &Path) -> Result<BootFiles> {
    let boot = rootfs.join("boot");
    let mut versions: Vec<String> = fs::read_dir(&boot)
        .map_err(|e| {
            invalid(format!(
                "{}: cannot list the image's /boot: {e}",
                boot.display()
            ))
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_owned)
        })
        .collect();
    versions.sort();
    let version = match fs::read_link(rootfs.join("vmlinuz")).ok().and_then(|t| {
        t.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .map(str::to_owned)
    }) {
        Some(v) if versions.contains(&v) => v,
        _ => match versions.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(invalid(format!(
                    "{}: the image has no kernel (/boot/vmlinuz-*); a bootable output needs one (layer base installs it)",
                    rootfs.display()
                )))
            }
            many => {
                return Err(invalid(format!(
                    "{}: several kernels ({}) and no /vmlinuz symlink saying which one boots",
                    rootfs.display(),
                    many.join(", ")
                )))
            }
        },
    };
    let kernel = boot.join(format!("vmlinuz-{version}"));
    let initrd = boot.join(format!("initrd.img-{version}"));
    if !initrd.is_file() {
        return Err(invalid(format!(
            "{}: the image has kernel {version} but no initrd {}",
            rootfs.display(),
            initrd.display()
        )));
    }
    Ok(BootFiles {
        kernel_version: version,
        kernel,
        initrd,
    })
}

/// systemd-boot's EFI binary from the image (package systemd-boot-efi on
/// bookworm, `systemd` itself on focal).
pub fn systemd_boot(rootfs: &Path) -> Result<PathBuf> {
    for rel in [
        "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "lib/systemd/boot/efi/systemd-bootx64.efi",
    ] {
        let p = resolve_in(rootfs, Path::new(rel))?;
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(invalid(format!(
        "{}: the image has no systemd-bootx64.efi; the `base` layer installs systemd-boot (package systemd-boot; part of systemd on focal)",
        rootfs.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn finds_kernel_by_symlink_and_resolves_absolute_links_inside_root() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        fs::create_dir_all(r.join("boot")).expect("mkdir");
        fs::create_dir_all(r.join("usr/lib")).expect("mkdir");
        for v in ["6.1.0-1-amd64", "6.1.0-2-amd64"] {
            fs::write(r.join(format!("boot/vmlinuz-{v}")), "k").expect("write");
            fs::write(r.join(format!("boot/initrd.img-{v}")), "i").expect("write");
        }
        symlink("boot/vmlinuz-6.1.0-1-amd64", r.join("vmlinuz")).expect("symlink");
        let b = find(r).expect("find");
        assert_eq!(b.kernel_version, "6.1.0-1-amd64");
        symlink("/usr/lib", r.join("lib")).expect("symlink");
        let p = resolve_in(r, Path::new("/lib/x")).expect("resolve");
        assert_eq!(p, r.join("usr/lib/x"));
    }

    #[test]
    fn several_kernels_without_symlink_is_invalid_input() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        fs::create_dir_all(r.join("boot")).expect("mkdir");
        for v in ["a", "b"] {
            fs::write(r.join(format!("boot/vmlinuz-{v}")), "k").expect("write");
        }
        let err = find(r).expect_err("ambiguous");
        assert_eq!(crate::error::exit_code(&err), 2, "{err:#}");
    }
}
