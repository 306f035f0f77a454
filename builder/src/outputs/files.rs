//! File plumbing shared by the outputs: digests, identifiers derived from the
//! image digest, sparse extents, publishing files atomically.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::unistd::{lseek, Whence};
use sha2::{Digest, Sha256};

/// sha256 hex and size of a file (the digest is the builder's one helper).
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    Ok((crate::image::sha256_file(path)?, size))
}

/// 16 bytes for `purpose` (e.g. "esp-partition"), stable for one image digest
/// and different between images, shaped as an RFC 4122 name-based UUID
/// (version 5 bits, SHA-256 instead of SHA-1 is fine for identifiers).
pub fn derive_uuid(rootfs_digest: &str, purpose: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"nib-outputs\0");
    h.update(rootfs_digest.as_bytes());
    h.update(b"\0");
    h.update(purpose.as_bytes());
    let d = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x50;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// Canonical text form, e.g. `0a1b2c3d-…`, lower case.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Byte ranges `[start, end)` of a file that hold data (SEEK_DATA/SEEK_HOLE),
/// i.e. what the tool that made it wrote; holes read as zeros.
pub fn data_extents(f: &File) -> Result<Vec<(u64, u64)>> {
    let size = f.metadata()?.len();
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        let start = match lseek(fd, pos, Whence::SeekData) {
            Ok(s) => s,
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e).context("lseek(SEEK_DATA)"),
        };
        let end = lseek(fd, start, Whence::SeekHole).context("lseek(SEEK_HOLE)")?;
        out.push((start as u64, end as u64));
        pos = end;
    }
    Ok(out)
}

/// Copy the data extents of `src` into `dst` at `offset`, leaving its holes
/// as holes. Returns the ranges written, in `dst` coordinates.
pub fn copy_extents(src: &Path, dst: &mut File, offset: u64) -> Result<Vec<(u64, u64)>> {
    let mut s = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let extents = data_extents(&s).with_context(|| format!("mapping {}", src.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut written = Vec::new();
    for &(start, end) in &extents {
        s.seek(SeekFrom::Start(start))?;
        dst.seek(SeekFrom::Start(offset + start))?;
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            s.read_exact(&mut buf[..n])
                .with_context(|| format!("reading {}", src.display()))?;
            dst.write_all(&buf[..n])?;
            left -= n as u64;
        }
        written.push((offset + start, offset + end));
    }
    Ok(written)
}

/// Write bytes to a file in a staging dir (no rename: the staging dir is
/// published whole).
pub fn write_staged(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// `io::Error` with the path in it, for the few places that need raw io.
pub fn io_ctx(e: io::Error, what: &str, path: &Path) -> anyhow::Error {
    anyhow::Error::new(e).context(format!("{what} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_stable_versioned_and_per_purpose() {
        let a = derive_uuid("abc", "root");
        assert_eq!(a, derive_uuid("abc", "root"));
        assert_ne!(a, derive_uuid("abc", "esp"));
        assert_ne!(a, derive_uuid("abd", "root"));
        let s = uuid_string(&a);
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "5");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
    }

    #[test]
    fn extents_skip_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sparse");
        let mut f = File::create(&p).expect("create");
        f.set_len(16 << 20).expect("len");
        f.seek(SeekFrom::Start(8 << 20)).expect("seek");
        f.write_all(&[1u8; 4096]).expect("write");
        f.sync_all().expect("sync");
        let f = File::open(&p).expect("open");
        let ext = data_extents(&f).expect("extents");
        assert_eq!(ext.len(), 1, "{ext:?}");
        assert!(
            ext[0].0 <= 8 << 20 && ext[0].1 >= (8 << 20) + 4096,
            "{ext:?}"
        );
        assert!(ext[0].1 - ext[0].0 < 4 << 20, "{ext:?}");
    }
}
