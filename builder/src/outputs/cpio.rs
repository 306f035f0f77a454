//! A minimal writer for the "newc" cpio format the kernel unpacks as an
//! initramfs. Used to append nib's PXE boot method to the image's initrd:
//! the kernel unpacks concatenated archives in order.

/// One entry: a directory (`data` None) or a regular file.
pub struct Entry<'a> {
    pub path: &'a str,
    pub mode: u32,
    pub data: Option<&'a [u8]>,
}

fn pad4(v: &mut Vec<u8>) {
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

fn header(v: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, mtime: u32, size: u32, name: &str) {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        mtime,
        size,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    v.extend_from_slice(b"070701");
    for f in fields {
        v.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    pad4(v);
}

/// The archive: owners root, times `mtime`, inode numbers in order.
pub fn write(entries: &[Entry<'_>], mtime: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let ino = 0x6e69_0000 + i as u32; // "ni..": away from the base archive's
        match e.data {
            None => header(&mut v, ino, 0o040000 | e.mode, 2, mtime, 0, e.path),
            Some(d) => {
                header(
                    &mut v,
                    ino,
                    0o100000 | e.mode,
                    1,
                    mtime,
                    d.len() as u32,
                    e.path,
                );
                v.extend_from_slice(d);
                pad4(&mut v);
            }
        }
    }
    header(&mut v, 0, 0, 1, 0, 0, "TRAILER!!!");
    v
}

/// Names in a newc archive (uncompressed), for tests.
pub fn list(a: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut i = 0usize;
    while i + 110 <= a.len() && &a[i..i + 6] == b"070701" {
        let field = |k: usize| {
            std::str::from_utf8(&a[i + 6 + 8 * k..i + 14 + 8 * k])
                .ok()
                .and_then(|s| usize::from_str_radix(s, 16).ok())
                .unwrap_or(0)
        };
        let (size, namesize) = (field(6), field(11));
        let end = (i + 110 + namesize.saturating_sub(1)).min(a.len());
        let name = String::from_utf8_lossy(&a[i + 110..end]).into_owned();
        if name == "TRAILER!!!" {
            break;
        }
        names.push(name);
        let data = (i + 110 + namesize).div_ceil(4) * 4;
        i = (data + size).div_ceil(4) * 4;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_names_and_alignment() {
        let a = write(
            &[
                Entry {
                    path: "scripts",
                    mode: 0o755,
                    data: None,
                },
                Entry {
                    path: "scripts/nib",
                    mode: 0o644,
                    data: Some(b"abc"),
                },
                Entry {
                    path: "nib",
                    mode: 0o755,
                    data: None,
                },
            ],
            1_700_000_000,
        );
        assert_eq!(a.len() % 4, 0);
        assert_eq!(list(&a), vec!["scripts", "scripts/nib", "nib"]);
    }

    /// GNU cpio (when installed) reads the archive as a newc archive.
    #[test]
    fn gnu_cpio_accepts_it() {
        use std::io::Write;
        let a = write(
            &[Entry {
                path: "x",
                mode: 0o644,
                data: Some(b"hello"),
            }],
            0,
        );
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cpio (make's APT_TEST)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&a)
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "x");
    }
}
