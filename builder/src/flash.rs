//! `nib flash disk.raw DEVICE`: write the mapped blocks of an image (per its
//! bmap) to a block device, then drop the device's cache and read every
//! written range back to check its sha256. Refuses a target that is mounted,
//! used as swap, held by device-mapper/RAID, or is the disk holding `/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::cli::FlashArgs;
use crate::error::invalid;
use crate::outputs::bmap::{self, Bmap, Range};

pub fn run(args: &FlashArgs) -> Result<()> {
    let image = &args.image;
    let meta = fs::metadata(image)
        .map_err(|e| invalid(format!("{}: cannot read the image: {e}", image.display())))?;
    if !meta.is_file() {
        return Err(invalid(format!("{}: not a regular file", image.display())));
    }
    let map = load_bmap(image, args.bmap.as_deref(), meta.len())?;

    let target = Target::inspect(&args.device, args.to_file)?;
    if let Some(size) = target.size {
        if size < map.image_size {
            return Err(invalid(format!(
                "{}: {} bytes, smaller than the image ({} bytes)",
                args.device.display(),
                size,
                map.image_size
            )));
        }
    }

    // Check the image against its map before touching the target, so a
    // corrupt download changes nothing.
    let mut img = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let map = checksum_ranges(&mut img, image, map)?;

    if !args.yes {
        confirm(&args.device, &target)?;
    }

    let mut dev = target.open_for_write(&args.device, map.image_size)?;
    let mut buf = vec![0u8; 4 << 20];
    let mut written = 0u64;
    for r in &map.ranges {
        let (start, end) = byte_range(&map, r);
        copy_range(&mut img, &mut dev, start, end, &mut buf).with_context(|| {
            format!("writing bytes {start}..{end} to {}", args.device.display())
        })?;
        written += end - start;
    }
    dev.sync_all()
        .with_context(|| format!("syncing {}", args.device.display()))?;
    drop_cache(&dev);

    // Read back through a fresh descriptor after dropping the page cache.
    let mut back = File::open(&args.device)
        .with_context(|| format!("reopening {} to verify", args.device.display()))?;
    for r in &map.ranges {
        let (start, end) = byte_range(&map, r);
        let got = hash_range(&mut back, start, end, &mut buf)?;
        if Some(&got) != r.sha256.as_ref() {
            bail!(
                "{}: read-back mismatch in bytes {start}..{end} (wrote {}, read {got}); the device may be faulty",
                args.device.display(),
                r.sha256.as_deref().unwrap_or("?")
            );
        }
    }
    println!(
        "flashed {} to {}: {} MiB written in {} ranges, read back and verified (sha256)",
        image.display(),
        args.device.display(),
        written >> 20,
        map.ranges.len()
    );
    Ok(())
}

fn load_bmap(image: &Path, given: Option<&Path>, image_size: u64) -> Result<Bmap> {
    let path: Option<PathBuf> = match given {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let mut p = image.as_os_str().to_owned();
            p.push(".bmap");
            let p = PathBuf::from(p);
            p.exists().then_some(p)
        }
    };
    let Some(path) = path else {
        // No map: the whole image is one range.
        let blocks = image_size.div_ceil(bmap::BLOCK);
        return Ok(Bmap {
            image_size,
            block_size: bmap::BLOCK,
            ranges: if blocks == 0 {
                vec![]
            } else {
                vec![Range {
                    first: 0,
                    last: blocks - 1,
                    sha256: None,
                }]
            },
        });
    };
    let text = fs::read_to_string(&path).map_err(|e| {
        invalid(format!(
            "{}: cannot read the block map: {e}",
            path.display()
        ))
    })?;
    let map = bmap::parse(&text).map_err(|e| invalid(format!("{}: {e:#}", path.display())))?;
    if map.image_size != image_size {
        return Err(invalid(format!(
            "{}: <ImageSize> is {} but {} has {} bytes; the map belongs to another image",
            path.display(),
            map.image_size,
            image.display(),
            image_size
        )));
    }
    Ok(map)
}

fn byte_range(map: &Bmap, r: &Range) -> (u64, u64) {
    (
        r.first * map.block_size,
        ((r.last + 1) * map.block_size).min(map.image_size),
    )
}

/// Verify the ranges that carry a checksum, fill in the ones that do not.
fn checksum_ranges(img: &mut File, path: &Path, mut map: Bmap) -> Result<Bmap> {
    let mut buf = vec![0u8; 4 << 20];
    let m = map.clone();
    for r in &mut map.ranges {
        let (start, end) = byte_range(&m, r);
        let got = hash_range(img, start, end, &mut buf)?;
        match &r.sha256 {
            Some(want) if *want != got => {
                return Err(invalid(format!(
                    "{}: blocks {}-{} do not match the block map (sha256 {got}, map says {want}); the image is corrupt or not the one the map was made for; nothing was written",
                    path.display(),
                    r.first,
                    r.last
                )))
            }
            Some(_) => {}
            None => r.sha256 = Some(got),
        }
    }
    Ok(map)
}

fn hash_range(f: &mut File, start: u64, end: u64, buf: &mut [u8]) -> Result<String> {
    f.seek(SeekFrom::Start(start))?;
    let mut h = Sha256::new();
    let mut left = end - start;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

fn copy_range(
    src: &mut File,
    dst: &mut File,
    start: u64,
    end: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    src.seek(SeekFrom::Start(start))?;
    dst.seek(SeekFrom::Start(start))?;
    let mut left = end - start;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n])?;
        dst.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn drop_cache(f: &File) {
    // Best effort: read-back must come from the device, not the page cache.
    let _ = nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

fn confirm(device: &Path, target: &Target) -> Result<()> {
    if !io::stdin().is_terminal() {
        return Err(invalid(format!(
            "{}: refusing to overwrite without confirmation; pass --yes",
            device.display()
        )));
    }
    eprint!(
        "This overwrites {}{}. Type yes to continue: ",
        device.display(),
        target.describe()
    );
    io::stderr().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "yes" {
        return Err(invalid("not confirmed; nothing was written"));
    }
    Ok(())
}

/// The device as the kernel sees it.
#[derive(Debug)]
pub struct Target {
    /// Block device numbers, None for a regular file target.
    pub rdev: Option<(u64, u64)>,
    pub size: Option<u64>,
    pub model: Option<String>,
}

impl Target {
    fn inspect(path: &Path, to_file: bool) -> Result<Target> {
        match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && to_file => Ok(Target {
                rdev: None,
                size: None,
                model: None,
            }),
            Err(e) => Err(invalid(format!("{}: {e}", path.display()))),
            Ok(m) if m.file_type().is_block_device() => {
                let (maj, min) = (major(m.rdev()), minor(m.rdev()));
                if let Some(reason) = refuse_reason((maj, min), &SystemView::read()?) {
                    return Err(invalid(format!(
                        "{}: refusing to flash: {reason}",
                        path.display()
                    )));
                }
                let size = File::open(path)
                    .and_then(|mut f| f.seek(SeekFrom::End(0)))
                    .with_context(|| format!("reading the size of {}", path.display()))?;
                let model = block_name((maj, min))
                    .and_then(|n| {
                        fs::read_to_string(format!("/sys/class/block/{n}/device/model")).ok()
                    })
                    .map(|s| s.trim().to_owned());
                Ok(Target {
                    rdev: Some((maj, min)),
                    size: Some(size),
                    model,
                })
            }
            Ok(m) if m.is_file() && to_file => Ok(Target {
                rdev: None,
                size: None,
                model: None,
            }),
            Ok(m) if m.is_file() => Err(invalid(format!(
                "{}: a regular file, not a block device (pass --to-file to write a file)",
                path.display()
            ))),
            Ok(_) => Err(invalid(format!("{}: not a block device", path.display()))),
        }
    }

    fn describe(&self) -> String {
        match (&self.size, &self.model) {
            (Some(s), Some(m)) => format!(" ({m}, {} GiB)", s >> 30),
            (Some(s), None) => format!(" ({} GiB)", s >> 30),
            _ => String::new(),
        }
    }

    fn open_for_write(&self, path: &Path, image_size: u64) -> Result<File> {
        if self.rdev.is_some() {
            // O_EXCL on a block device fails while anything has it mounted
            // or claimed: a last guard against a race with a mount.
            OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_EXCL)
                .open(path)
                .with_context(|| format!("opening {} exclusively", path.display()))
        } else {
            // A file target ends up equal to the image: unmapped = holes.
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.set_len(image_size)?;
            Ok(f)
        }
    }
}

pub fn major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff)
}

pub fn minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x00ff)
}

fn block_name(dev: (u64, u64)) -> Option<String> {
    let link = fs::read_link(format!("/sys/dev/block/{}:{}", dev.0, dev.1)).ok()?;
    link.file_name().and_then(|n| n.to_str()).map(str::to_owned)
}

/// What the refusal rules look at, read from /proc and /sys (or given by
/// tests).
#[derive(Debug, Default)]
pub struct SystemView {
    /// Devices with a mounted filesystem (major, minor), from mountinfo.
    pub mounted: Vec<(u64, u64)>,
    /// Device of `/`.
    pub root: Option<(u64, u64)>,
    /// Swap devices.
    pub swaps: Vec<(u64, u64)>,
    /// For a disk: its partitions; for a partition: its disk. As (dev, parent).
    pub parents: Vec<((u64, u64), (u64, u64))>,
    /// Devices something (dm, md) holds open.
    pub held: Vec<(u64, u64)>,
}

impl SystemView {
    pub fn read() -> Result<SystemView> {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        let mut v = SystemView::from_mountinfo(&mountinfo);
        if let Ok(swaps) = fs::read_to_string("/proc/swaps") {
            for line in swaps.lines().skip(1) {
                if let Some(dev) = line.split_whitespace().next() {
                    if let Ok(m) = fs::metadata(dev) {
                        if m.file_type().is_block_device() {
                            v.swaps.push((major(m.rdev()), minor(m.rdev())));
                        }
                    }
                }
            }
        }
        for e in fs::read_dir("/sys/class/block")
            .context("listing /sys/class/block")?
            .flatten()
        {
            let p = e.path();
            let Some(dev) = read_devnum(&p.join("dev")) else {
                continue;
            };
            if p.join("partition").exists() {
                if let Some(parent) = fs::canonicalize(&p)
                    .ok()
                    .and_then(|c| read_devnum(&c.parent()?.join("dev")))
                {
                    v.parents.push((dev, parent));
                }
            }
            if fs::read_dir(p.join("holders"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
            {
                v.held.push(dev);
            }
        }
        Ok(v)
    }

    /// Mounted devices and the device of `/` from /proc/self/mountinfo.
    pub fn from_mountinfo(text: &str) -> SystemView {
        let mut v = SystemView::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            let Some((a, b)) = f[2].split_once(':') else {
                continue;
            };
            let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
                continue;
            };
            if a == 0 {
                continue; // virtual filesystems (tmpfs, proc, overlay…)
            }
            v.mounted.push((a, b));
            if f[4] == "/" {
                v.root = Some((a, b));
            }
        }
        v
    }
}

fn read_devnum(p: &Path) -> Option<(u64, u64)> {
    let s = fs::read_to_string(p).ok()?;
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Why `dev` must not be flashed, if it must not: it (or one of its
/// partitions) is mounted, swap or held by another device, or it is the
/// disk (or a partition of the disk) holding `/`.
pub fn refuse_reason(dev: (u64, u64), sys: &SystemView) -> Option<String> {
    let disk_of = |d: (u64, u64)| {
        sys.parents
            .iter()
            .find(|(p, _)| *p == d)
            .map(|(_, parent)| *parent)
            .unwrap_or(d)
    };
    let family: Vec<(u64, u64)> = std::iter::once(dev)
        .chain(
            sys.parents
                .iter()
                .filter(|(_, parent)| *parent == dev)
                .map(|(p, _)| *p),
        )
        .collect();
    if let Some(root) = sys.root {
        if disk_of(root) == disk_of(dev) {
            return Some(format!(
                "it is (on) the disk holding / ({}:{})",
                root.0, root.1
            ));
        }
    }
    for d in &family {
        if sys.mounted.contains(d) {
            return Some(format!("{}:{} is mounted", d.0, d.1));
        }
        if sys.swaps.contains(d) {
            return Some(format!("{}:{} is in use as swap", d.0, d.1));
        }
        if sys.held.contains(d) {
            return Some(format!(
                "{}:{} is held by another device (device-mapper, RAID)",
                d.0, d.1
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw - proc proc rw
40 22 8:17 / /mnt/usb rw,relatime - vfat /dev/sdb1 rw
";

    fn view() -> SystemView {
        let mut v = SystemView::from_mountinfo(MOUNTINFO);
        v.parents = vec![((8, 17), (8, 16)), ((8, 1), (8, 0)), ((254, 1), (254, 0))];
        v
    }

    #[test]
    fn refuses_root_disk_and_mounted_partitions_only() {
        let v = view();
        assert_eq!(v.root, Some((254, 0)));
        assert!(refuse_reason((254, 0), &v)
            .expect("root")
            .contains("holding /"));
        // a partition of the root disk
        assert!(refuse_reason((254, 1), &v)
            .expect("root part")
            .contains("holding /"));
        // a disk with a mounted partition
        assert!(refuse_reason((8, 16), &v)
            .expect("mounted")
            .contains("8:17 is mounted"));
        // an idle disk is fine
        assert_eq!(refuse_reason((8, 0), &v), None);
    }

    #[test]
    fn refuses_swap_and_held() {
        let mut v = view();
        v.swaps.push((8, 1));
        assert!(refuse_reason((8, 0), &v).expect("swap").contains("swap"));
        v.swaps.clear();
        v.held.push((8, 0));
        assert!(refuse_reason((8, 0), &v).expect("held").contains("held"));
    }

    /// The live system: the disk holding / is always refused.
    #[test]
    #[ignore = "needs / on a block device (a machine or VM, not a container); run by: make test"]
    fn live_root_disk_is_refused() {
        let v = SystemView::read().expect("read /proc and /sys");
        let root = v.root.expect("/ on a block device");
        assert!(refuse_reason(root, &v).is_some());
    }
}
