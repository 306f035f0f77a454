//! A GUID partition table written by hand, so that every byte is ours and
//! derived from the image digest (UEFI 2.10, section 5.3). No loop devices,
//! no sfdisk: the table goes straight into the disk image file.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use anyhow::{ensure, Result};

pub const SECTOR: u64 = 512;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors taken by the partition entry array (128 × 128 bytes).
const ARRAY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// EFI system partition.
pub const TYPE_ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// Linux root (x86-64), from the Discoverable Partitions Specification.
pub const TYPE_ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

#[derive(Debug, Clone)]
pub struct Partition {
    pub type_guid: [u8; 16],
    pub unique_guid: [u8; 16],
    pub first_lba: u64,
    /// Inclusive, as on disk.
    pub last_lba: u64,
    pub name: String,
}

/// `aabbccdd-…` text to the 16 bytes in RFC 4122 (big-endian) order.
pub fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let h: String = s.chars().filter(|c| *c != '-').collect();
    ensure!(h.len() == 32, "bad UUID {s}");
    let mut u = [0u8; 16];
    hex::decode_to_slice(&h, &mut u)?;
    Ok(u)
}

/// RFC 4122 byte order to the mixed-endian order GPT stores GUIDs in.
fn guid_bytes(u: &[u8; 16]) -> [u8; 16] {
    let mut g = *u;
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

/// CRC-32 (IEEE 802.3, reflected), as GPT headers use.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// First and last LBA usable by partitions on a disk of `total_sectors`.
pub fn usable_range(total_sectors: u64) -> (u64, u64) {
    (2 + ARRAY_SECTORS, total_sectors - 2 - ARRAY_SECTORS)
}

fn entry_array(parts: &[Partition]) -> Vec<u8> {
    let mut a = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut a[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&guid_bytes(&p.type_guid));
        e[16..32].copy_from_slice(&guid_bytes(&p.unique_guid));
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        // attributes (48..56) stay 0
        for (j, c) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
        }
    }
    a
}

fn header(
    disk_guid: &[u8; 16],
    total_sectors: u64,
    current: u64,
    backup: u64,
    array_lba: u64,
    array_crc: u32,
) -> Vec<u8> {
    let (first, last) = usable_range(total_sectors);
    let mut h = vec![0u8; SECTOR as usize];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&current.to_le_bytes());
    h[32..40].copy_from_slice(&backup.to_le_bytes());
    h[40..48].copy_from_slice(&first.to_le_bytes());
    h[48..56].copy_from_slice(&last.to_le_bytes());
    h[56..72].copy_from_slice(&guid_bytes(disk_guid));
    h[72..80].copy_from_slice(&array_lba.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&array_crc.to_le_bytes());
    let crc = crc32(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

fn protective_mbr(total_sectors: u64) -> Vec<u8> {
    let mut m = vec![0u8; SECTOR as usize];
    let e = &mut m[446..462];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    e[4] = 0xee;
    e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = (total_sectors - 1).min(u64::from(u32::MAX)) as u32;
    e[12..16].copy_from_slice(&size.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// Write protective MBR, primary and backup GPT into a disk image of
/// `total_sectors`. Returns the byte ranges written (for the block map).
pub fn write(
    f: &mut File,
    total_sectors: u64,
    disk_guid: &[u8; 16],
    parts: &[Partition],
) -> Result<Vec<(u64, u64)>> {
    ensure!(parts.len() <= ENTRIES as usize, "too many partitions");
    let (first, last) = usable_range(total_sectors);
    for p in parts {
        ensure!(
            p.first_lba >= first && p.last_lba <= last && p.first_lba <= p.last_lba,
            "partition {} ({}..={}) outside the usable range {first}..={last}",
            p.name,
            p.first_lba,
            p.last_lba
        );
    }
    let array = entry_array(parts);
    let array_crc = crc32(&array);
    let last_lba = total_sectors - 1;
    let backup_array = last_lba - ARRAY_SECTORS;

    let mut primary = protective_mbr(total_sectors);
    primary.extend(header(disk_guid, total_sectors, 1, last_lba, 2, array_crc));
    primary.extend(&array);
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&primary)?;

    let mut backup = array;
    backup.extend(header(
        disk_guid,
        total_sectors,
        last_lba,
        1,
        backup_array,
        array_crc,
    ));
    f.seek(SeekFrom::Start(backup_array * SECTOR))?;
    f.write_all(&backup)?;
    Ok(vec![
        (0, primary.len() as u64),
        (backup_array * SECTOR, total_sectors * SECTOR),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn guid_mixed_endian() {
        let u = parse_uuid(TYPE_ESP).expect("uuid");
        assert_eq!(
            hex::encode(guid_bytes(&u)),
            "28732ac11ff8d211ba4b00a0c93ec93b"
        );
    }

    /// sfdisk (util-linux) reads back exactly what we wrote.
    #[test]
    fn sfdisk_reads_our_table() {
        // sfdisk: fdisk is in make's APT_BUILD; missing, the test fails.
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("disk");
        let mut f = File::create(&p).expect("create");
        let total = 64 * 2048; // 64 MiB
        f.set_len(total * SECTOR).expect("len");
        let parts = vec![
            Partition {
                type_guid: parse_uuid(TYPE_ESP).expect("uuid"),
                unique_guid: parse_uuid("11111111-2222-4333-8444-555555555555").expect("uuid"),
                first_lba: 2048,
                last_lba: 2048 + 16 * 2048 - 1,
                name: "esp".into(),
            },
            Partition {
                type_guid: parse_uuid(TYPE_ROOT_X86_64).expect("uuid"),
                unique_guid: parse_uuid("66666666-7777-4888-9999-aaaaaaaaaaaa").expect("uuid"),
                first_lba: 2048 + 16 * 2048,
                last_lba: 62 * 2048 - 1,
                name: "root".into(),
            },
        ];
        let disk = parse_uuid("0123abcd-0000-4000-8000-000000000001").expect("uuid");
        write(&mut f, total, &disk, &parts).expect("write");
        drop(f);
        let out = std::process::Command::new("sfdisk")
            .arg("--json")
            .arg(&p)
            .output()
            .expect("sfdisk");
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("\"id\": \"0123abcd-0000-4000-8000-000000000001\""),
            "{text}"
        );
        let j: serde_json::Value = serde_json::from_str(&text).expect("sfdisk json");
        let p0 = &j["partitiontable"]["partitions"][0];
        assert_eq!(p0["start"].as_u64(), Some(2048), "{text}");
        assert_eq!(p0["size"].as_u64(), Some(32768), "{text}");
        assert!(text.contains(TYPE_ROOT_X86_64), "{text}");
        assert!(
            text.contains("66666666-7777-4888-9999-aaaaaaaaaaaa"),
            "{text}"
        );
        assert!(text.contains("\"name\": \"root\""), "{text}");
        // sfdisk --verify checks both headers and their CRCs
        let v = std::process::Command::new("sfdisk")
            .arg("--verify")
            .arg(&p)
            .output()
            .expect("sfdisk");
        let vt = String::from_utf8_lossy(&v.stdout);
        assert!(
            v.status.success() && vt.contains("No errors detected"),
            "{vt}"
        );
    }
}
