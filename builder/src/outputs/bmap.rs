//! Block maps in bmaptool's XML format (version 2.0, sha256 checksums), so
//! `bmaptool copy` and `nib flash` write only the blocks that hold data.
//! The map is what the build wrote (GPT, ESP, the ext4 image's data
//! extents), not "non-zero blocks": a zeroed inode table or FAT must reach
//! the device even though it is all zeros.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

pub const BLOCK: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First and last block, inclusive (as in the XML).
    pub first: u64,
    pub last: u64,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub ranges: Vec<Range>,
}

impl Bmap {
    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }
}

/// Byte ranges `[start, end)` to merged, block-aligned, inclusive block ranges.
pub fn blocks_of(byte_ranges: &[(u64, u64)], image_size: u64) -> Vec<(u64, u64)> {
    let blocks = image_size.div_ceil(BLOCK);
    let mut v: Vec<(u64, u64)> = byte_ranges
        .iter()
        .filter(|(s, e)| e > s)
        .map(|&(s, e)| (s / BLOCK, (e.div_ceil(BLOCK)).min(blocks) - 1))
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (f, l) in v {
        match out.last_mut() {
            Some(last) if f <= last.1 + 1 => last.1 = last.1.max(l),
            _ => out.push((f, l)),
        }
    }
    out
}

/// Map of `image` with checksums of each range read from the file.
pub fn create(image: &Path, byte_ranges: &[(u64, u64)]) -> Result<Bmap> {
    let mut f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let image_size = f.metadata()?.len();
    let mut ranges = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for (first, last) in blocks_of(byte_ranges, image_size) {
        let start = first * BLOCK;
        let end = ((last + 1) * BLOCK).min(image_size);
        f.seek(SeekFrom::Start(start))?;
        let mut h = Sha256::new();
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n])
                .with_context(|| format!("reading {}", image.display()))?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        ranges.push(Range {
            first,
            last,
            sha256: Some(hex::encode(h.finalize())),
        });
    }
    Ok(Bmap {
        image_size,
        block_size: BLOCK,
        ranges,
    })
}

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The XML text, with `BmapFileChecksum` computed as bmaptool checks it
/// (sha256 of the file with the checksum's own digits set to "0").
pub fn to_xml(b: &Bmap) -> String {
    let blocks = b.image_size.div_ceil(b.block_size);
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" ?>\n");
    x.push_str("<!-- Block map of an image made by nib: the blocks that hold data.\n");
    x.push_str("     Write it with `nib flash` or `bmaptool copy`. -->\n");
    x.push_str("<bmap version=\"2.0\">\n");
    x.push_str(&format!("    <ImageSize> {} </ImageSize>\n", b.image_size));
    x.push_str(&format!("    <BlockSize> {} </BlockSize>\n", b.block_size));
    x.push_str(&format!("    <BlocksCount> {blocks} </BlocksCount>\n"));
    x.push_str(&format!(
        "    <MappedBlocksCount> {} </MappedBlocksCount>\n",
        b.mapped_blocks()
    ));
    x.push_str("    <ChecksumType> sha256 </ChecksumType>\n");
    x.push_str(&format!(
        "    <BmapFileChecksum> {ZEROS} </BmapFileChecksum>\n"
    ));
    x.push_str("    <BlockMap>\n");
    for r in &b.ranges {
        let cs = r
            .sha256
            .as_ref()
            .map(|c| format!(" chksum=\"{c}\""))
            .unwrap_or_default();
        if r.first == r.last {
            x.push_str(&format!("        <Range{cs}> {} </Range>\n", r.first));
        } else {
            x.push_str(&format!(
                "        <Range{cs}> {}-{} </Range>\n",
                r.first, r.last
            ));
        }
    }
    x.push_str("    </BlockMap>\n");
    x.push_str("</bmap>\n");
    let sum = hex::encode(Sha256::digest(x.as_bytes()));
    x.replacen(ZEROS, &sum, 1)
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let s = xml.find(&open)? + open.len();
    let e = s + xml[s..].find(&close)?;
    Some(xml[s..e].trim())
}

/// Parse a bmap (ours or bmaptool's, version 1.x/2.x with sha256 or without
/// checksums). Verifies the file checksum when there is one.
pub fn parse(xml: &str) -> Result<Bmap> {
    let num = |name: &str| -> Result<u64> {
        tag(xml, name)
            .with_context(|| format!("no <{name}>"))?
            .parse::<u64>()
            .with_context(|| format!("<{name}> is not a number"))
    };
    let image_size = num("ImageSize")?;
    let block_size = num("BlockSize")?;
    ensure!(
        block_size > 0 && block_size % 512 == 0,
        "<BlockSize> {block_size} is not a multiple of 512"
    );
    if let Some(ct) = tag(xml, "ChecksumType") {
        ensure!(
            ct == "sha256",
            "<ChecksumType> {ct}: only sha256 is supported"
        );
    }
    if let Some(sum) = tag(xml, "BmapFileChecksum") {
        ensure!(sum.len() == 64, "<BmapFileChecksum> is not a sha256");
        let zeroed = xml.replacen(sum, ZEROS, 1);
        let got = hex::encode(Sha256::digest(zeroed.as_bytes()));
        ensure!(
            got == sum,
            "bmap file checksum mismatch (file says {sum}, content is {got})"
        );
    }
    let blocks = image_size.div_ceil(block_size);
    let mut ranges = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<Range") {
        rest = &rest[i + "<Range".len()..];
        let gt = rest.find('>').context("unterminated <Range")?;
        let attrs = &rest[..gt];
        let end = rest.find("</Range>").context("no </Range>")?;
        let body = rest[gt + 1..end].trim();
        rest = &rest[end..];
        let sha256 = attrs
            .split("chksum=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .map(str::to_owned);
        let (first, last) = match body.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u64>()?, b.trim().parse::<u64>()?),
            None => {
                let a = body.parse::<u64>()?;
                (a, a)
            }
        };
        if first > last || last >= blocks {
            bail!("<Range> {body} is outside the image ({blocks} blocks)");
        }
        ranges.push(Range {
            first,
            last,
            sha256,
        });
    }
    Ok(Bmap {
        image_size,
        block_size,
        ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_merge_and_align() {
        let b = blocks_of(
            &[(0, 100), (4096, 8192), (20000, 20001), (8192, 9000)],
            1 << 20,
        );
        assert_eq!(b, vec![(0, 2), (4, 4)]);
    }

    #[test]
    fn xml_round_trips_and_detects_tampering() {
        let b = Bmap {
            image_size: 10 * BLOCK + 5,
            block_size: BLOCK,
            ranges: vec![
                Range {
                    first: 0,
                    last: 3,
                    sha256: Some("ab".repeat(32)),
                },
                Range {
                    first: 10,
                    last: 10,
                    sha256: Some("cd".repeat(32)),
                },
            ],
        };
        let x = to_xml(&b);
        assert_eq!(parse(&x).expect("parse"), b);
        let bad = x.replace("> 0-3 <", "> 0-4 <");
        let err = parse(&bad).expect_err("tampered");
        assert!(format!("{err}").contains("checksum mismatch"), "{err}");
    }
}
