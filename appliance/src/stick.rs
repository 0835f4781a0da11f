//! `stick verify`: checks a stick (a device or an image file) against the
//! manifest its build wrote (`assemble-stick.sh`), offline, on a workstation.
//!
//! The verity root protects the root file system only once the kernel runs
//! with the right root hash; the boot partition, which holds that hash on
//! the kernel command line, and the boot code are not protected on the
//! stick itself. This check closes that gap: every partition but the audit
//! partition, the MBR's boot code, and the root hash recomputed from the
//! verity partition's top hash block must match the manifest.
//!
//! Manifest format (text, one item per line):
//!
//! ```text
//! reliquary-stick-manifest 1
//! root-hash HEX
//! cmdline WORDS...
//! partition NAME START_SECTOR SECTOR_COUNT SHA256_HEX
//! mbr-boot-code SHA256_HEX
//! ```

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use reliquary_image::{PartitionScheme, ReadAt};
use ring::digest::{Context, SHA256};

use crate::exit::ExitClass;
use crate::partition;

/// The first line of every manifest.
pub const MANIFEST_HEADER: &str = "reliquary-stick-manifest 1";
/// The manifest and the partition table count 512-byte sectors.
const SECTOR: u64 = 512;
/// The MBR's boot code area (the partition table follows it).
const MBR_CODE_LEN: usize = 440;
/// dm-verity superblock: `verity\0\0`, then the fields read below.
const VERITY_MAGIC: &[u8; 8] = b"verity\0\0";
const VERITY_SUPERBLOCK_LEN: usize = 512;
/// Digests are computed in pieces of this size.
const READ_CHUNK: usize = 1 << 20;

/// What the build recorded about a stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickManifest {
    pub root_hash: String,
    pub cmdline: String,
    pub partitions: Vec<ManifestPartition>,
    pub mbr_boot_code_sha256: String,
}

/// One partition the build wrote, by GPT name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPartition {
    pub name: String,
    pub start_sector: u64,
    pub sector_count: u64,
    pub sha256: String,
}

/// One item compared: what, whether it matches, and what was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StickCheck {
    pub item: String,
    pub matches: bool,
    pub detail: String,
}

/// Every item compared, in manifest order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StickReport {
    pub checks: Vec<StickCheck>,
}

impl StickReport {
    pub fn all_match(&self) -> bool {
        self.checks.iter().all(|c| c.matches)
    }

    pub fn differences(&self) -> usize {
        self.checks.iter().filter(|c| !c.matches).count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StickError {
    #[error("cannot read the stick manifest {path}: {source}")]
    ReadManifest {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the stick manifest is malformed at line {line}: {reason}")]
    ParseManifest { line: usize, reason: String },
    #[error("cannot open the stick {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the stick {path} at byte {offset}: {source}")]
    Read {
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
    #[error("the stick differs from its manifest in {count} item(s)")]
    Differs { count: usize },
}

impl StickError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            StickError::ParseManifest { .. } | StickError::Differs { .. } => ExitClass::Integrity,
            _ => ExitClass::Runtime,
        }
    }
}

/// Reads and parses a manifest file.
pub fn read_manifest(path: &Path) -> Result<StickManifest, StickError> {
    let text = std::fs::read_to_string(path).map_err(|source| StickError::ReadManifest {
        path: path.to_path_buf(),
        source,
    })?;
    parse_manifest(&text)
}

/// Parses a manifest; every line must be known and every field valid.
pub fn parse_manifest(text: &str) -> Result<StickManifest, StickError> {
    let mut lines = text.lines().enumerate();
    let bad = |line: usize, reason: &str| StickError::ParseManifest {
        line: line + 1,
        reason: reason.to_string(),
    };
    match lines.next() {
        Some((_, MANIFEST_HEADER)) => {}
        _ => {
            return Err(bad(
                0,
                &format!("the first line must be {MANIFEST_HEADER:?}"),
            ))
        }
    }
    let (mut root_hash, mut cmdline, mut mbr) = (None, None, None);
    let mut partitions = Vec::new();
    for (n, line) in lines {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "root-hash" if is_hex_digest(rest) => root_hash = Some(rest.to_string()),
            "cmdline" => cmdline = Some(rest.to_string()),
            "mbr-boot-code" if is_hex_digest(rest) => mbr = Some(rest.to_string()),
            "partition" => {
                let fields: Vec<&str> = rest.split(' ').collect();
                let [name, start, count, digest] = fields[..] else {
                    return Err(bad(n, "a partition line has NAME START COUNT SHA256"));
                };
                let number = |s: &str| s.parse::<u64>().map_err(|_| bad(n, "bad sector number"));
                if !is_hex_digest(digest) {
                    return Err(bad(n, "bad SHA-256"));
                }
                partitions.push(ManifestPartition {
                    name: name.to_string(),
                    start_sector: number(start)?,
                    sector_count: number(count)?,
                    sha256: digest.to_string(),
                });
            }
            "" => {}
            _ => return Err(bad(n, &format!("unknown or invalid line {line:?}"))),
        }
    }
    let root_hash = root_hash.ok_or_else(|| bad(0, "no root-hash line"))?;
    let cmdline = cmdline.ok_or_else(|| bad(0, "no cmdline line"))?;
    if !cmdline
        .split(' ')
        .any(|w| w == format!("reliquary.roothash={root_hash}"))
    {
        return Err(bad(0, "the cmdline does not carry the root hash"));
    }
    if partitions.is_empty() {
        return Err(bad(0, "no partition lines"));
    }
    Ok(StickManifest {
        root_hash,
        cmdline,
        partitions,
        mbr_boot_code_sha256: mbr.ok_or_else(|| bad(0, "no mbr-boot-code line"))?,
    })
}

/// Compares the stick at `path` with `manifest`. Differences are in the
/// report; errors are only for what could not be read.
pub fn verify_stick(path: &Path, manifest: &StickManifest) -> Result<StickReport, StickError> {
    let file = File::open(path).map_err(|source| StickError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let stick = Stick { file, path };
    let size = stick.size()?;
    let mut checks = Vec::new();

    let mut code = [0u8; MBR_CODE_LEN];
    stick.read(&mut code, 0)?;
    checks.push(compare_digest(
        "MBR boot code".into(),
        &manifest.mbr_boot_code_sha256,
        &sha256_hex(&code),
    ));

    let (table, _) = partition::summarize(&stick.file, SECTOR as u32, size / SECTOR);
    let on_stick = match table.scheme {
        PartitionScheme::Gpt { .. } => table.partitions,
        _ => Vec::new(),
    };
    for expected in &manifest.partitions {
        let item = format!("partition {}", expected.name);
        let found = on_stick
            .iter()
            .find(|p| p.name.as_deref() == Some(expected.name.as_str()));
        let Some(found) = found else {
            checks.push(StickCheck {
                item,
                matches: false,
                detail: "no GPT partition has this name".into(),
            });
            continue;
        };
        if (found.start_sector, found.sector_count)
            != (expected.start_sector, expected.sector_count)
        {
            checks.push(StickCheck {
                item,
                matches: false,
                detail: format!(
                    "at sectors {}+{}, the manifest says {}+{}",
                    found.start_sector,
                    found.sector_count,
                    expected.start_sector,
                    expected.sector_count
                ),
            });
            continue;
        }
        let digest = stick.digest(
            expected.start_sector * SECTOR,
            expected.sector_count * SECTOR,
        )?;
        checks.push(compare_digest(item, &expected.sha256, &digest));
    }

    if let Some(verity) = manifest
        .partitions
        .iter()
        .find(|p| p.name == "reliquary-verity")
    {
        let found = stick.verity_root_hash(verity.start_sector * SECTOR)?;
        checks.push(match found {
            Ok(hash) => compare_digest("verity root hash".into(), &manifest.root_hash, &hash),
            Err(reason) => StickCheck {
                item: "verity root hash".into(),
                matches: false,
                detail: reason,
            },
        });
    }
    Ok(StickReport { checks })
}

struct Stick<'a> {
    file: File,
    path: &'a Path,
}

impl Stick<'_> {
    fn size(&self) -> Result<u64, StickError> {
        // Seek works for block devices, whose metadata length is 0.
        (&self.file)
            .seek(SeekFrom::End(0))
            .map_err(|source| self.read_error(0, source))
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<(), StickError> {
        ReadAt::read_exact_at(&self.file, buf, offset).map_err(|e| self.read_error(offset, e))
    }

    fn read_error(&self, offset: u64, source: std::io::Error) -> StickError {
        StickError::Read {
            path: self.path.to_path_buf(),
            offset,
            source,
        }
    }

    fn digest(&self, offset: u64, len: u64) -> Result<String, StickError> {
        let mut context = Context::new(&SHA256);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(READ_CHUNK as u64) as usize;
            self.read(&mut buf[..n], offset + done)?;
            context.update(&buf[..n]);
            done += n as u64;
        }
        Ok(hex::encode(context.finish()))
    }

    /// The root hash of a dm-verity hash device at `offset` (format 1, with
    /// its superblock, SHA-256): SHA-256(salt || the top hash block), the
    /// top block being the first after the superblock's block. The inner
    /// `Err` says why it cannot be computed.
    fn verity_root_hash(&self, offset: u64) -> Result<Result<String, String>, StickError> {
        let mut sb = [0u8; VERITY_SUPERBLOCK_LEN];
        self.read(&mut sb, offset)?;
        if &sb[..8] != VERITY_MAGIC {
            return Ok(Err("the verity partition has no verity superblock".into()));
        }
        let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
        let (version, hash_type) = (u32_at(8), u32_at(12));
        let algorithm = String::from_utf8_lossy(&sb[32..64])
            .trim_end_matches('\0')
            .to_string();
        let hash_block_size = u32_at(68) as usize;
        let salt_size = u16::from_le_bytes([sb[80], sb[81]]) as usize;
        if version != 1 || hash_type != 1 || algorithm != "sha256" || salt_size > 256 {
            return Ok(Err(format!(
                "unsupported verity format (version {version}, type {hash_type}, {algorithm})"
            )));
        }
        if !(512..=65536).contains(&hash_block_size) || !hash_block_size.is_power_of_two() {
            return Ok(Err(format!("bad verity hash block size {hash_block_size}")));
        }
        let mut top = vec![0u8; hash_block_size];
        self.read(&mut top, offset + hash_block_size as u64)?;
        let mut context = Context::new(&SHA256);
        context.update(&sb[88..88 + salt_size]);
        context.update(&top);
        Ok(Ok(hex::encode(context.finish())))
    }
}

fn compare_digest(item: String, expected: &str, found: &str) -> StickCheck {
    let matches = expected.eq_ignore_ascii_case(found);
    let detail = if matches {
        format!("sha256 {found}")
    } else {
        format!("sha256 {found}, the manifest says {expected}")
    };
    StickCheck {
        item,
        matches,
        detail,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&SHA256, bytes))
}

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "bf34ad320b1415c7a31b6e049f7ff0c0fa73c3bd0f8c0be0f43dea51310f7b25";

    fn manifest_text(cmdline: &str) -> String {
        format!(
            "{MANIFEST_HEADER}\nroot-hash {HASH}\ncmdline {cmdline}\n\
             partition reliquary-root 102400 8728 {HASH}\nmbr-boot-code {HASH}\n"
        )
    }

    #[test]
    fn parses_a_manifest() {
        let m = parse_manifest(&manifest_text(&format!("quiet reliquary.roothash={HASH}")))
            .expect("parses");
        assert_eq!(m.root_hash, HASH);
        assert_eq!(
            m.partitions,
            vec![ManifestPartition {
                name: "reliquary-root".into(),
                start_sector: 102400,
                sector_count: 8728,
                sha256: HASH.into(),
            }]
        );
    }

    #[test]
    fn refuses_a_cmdline_without_the_root_hash() {
        let err = parse_manifest(&manifest_text("quiet")).expect_err("refused");
        assert!(err.to_string().contains("root hash"), "{err}");
    }

    #[test]
    fn refuses_unknown_lines_and_a_wrong_header() {
        let text = manifest_text(&format!("reliquary.roothash={HASH}")) + "extra line\n";
        assert!(parse_manifest(&text).is_err());
        assert!(parse_manifest("reliquary-stick-manifest 2\n").is_err());
    }
}
