//! `stick verify`: checks a stick (a device or an image file) against the
//! manifest its build wrote (`assemble-stick.sh`), offline, on a workstation.
//!
//! Secure Boot checks the signed kernel image only on UEFI machines that
//! have the stick's key enrolled; on BIOS/CSM machines nothing checks the
//! stick at boot. This check covers every byte the boot reads: the
//! protective MBR with its boot code, both GPTs (header and entry array:
//! an extra, moved or renamed partition, or a changed partition GUID,
//! shows there), every partition but the audit partition (the BIOS boot
//! partition with GRUB and the command line, the ESP with the signed kernel
//! image, root, verity, vault), and the root hash recomputed from the verity
//! partition's top hash block. The audit partition, written at every
//! session, must hold the audit file system the build made (its label and
//! UUID, filling the partition) and nothing before it: no second boot
//! partition can hide there.
//!
//! Manifest format (text, one item per line, sectors of 512 bytes):
//!
//! ```text
//! reliquary-stick-manifest 2
//! root-hash HEX
//! cmdline WORDS...
//! sectors IMAGE_SECTOR_COUNT
//! region protective-mbr|primary-gpt|backup-gpt START_SECTOR SECTOR_COUNT SHA256_HEX
//! partition NAME START_SECTOR SECTOR_COUNT SHA256_HEX
//! audit-fs-uuid UUID
//! ```
//!
//! Version 1 manifests (before the partition tables and the audit
//! partition were covered) are refused: rebuild the stick.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use reliquary_image::{PartitionScheme, ReadAt};
use ring::digest::{Context, SHA256};

use crate::exit::ExitClass;
use crate::partition;

/// The first line of every manifest.
pub const MANIFEST_HEADER: &str = "reliquary-stick-manifest 2";
/// The manifest and the partition table count 512-byte sectors.
const SECTOR: u64 = 512;
/// The GPT name of the only partition the stick writes.
const AUDIT_PARTITION: &str = "reliquary-audit";
/// dm-verity superblock: `verity\0\0`, then the fields read below.
const VERITY_MAGIC: &[u8; 8] = b"verity\0\0";
const VERITY_SUPERBLOCK_LEN: usize = 512;
/// ext4: the superblock is 1024 bytes at byte 1024; the 1024 bytes before
/// it are unused by ext4 (mkfs.ext4 zeroes them), which is where a FAT or
/// another boot sector would have to start.
const EXT4_BOOT_AREA: usize = 1024;
const EXT4_SUPERBLOCK_LEN: usize = 1024;
const EXT4_MAGIC: u16 = 0xef53;
/// The label `assemble-stick.sh` gives the audit file system.
const AUDIT_LABEL: &str = "reliquary-audit";
/// Digests are computed in pieces of this size.
const READ_CHUNK: usize = 1 << 20;

/// What the build recorded about a stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickManifest {
    pub root_hash: String,
    pub cmdline: String,
    /// The built image's size; the stick may be larger (a bigger drive).
    pub sectors: u64,
    pub regions: Vec<ManifestRegion>,
    pub partitions: Vec<ManifestPartition>,
    /// The audit file system's UUID, as `mkfs.ext4 -U` was given it.
    pub audit_fs_uuid: [u8; 16],
}

/// The partition-table areas, which belong to no partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// Sector 0: GRUB's boot.img, the disk signature, the protective entry.
    ProtectiveMbr,
    /// The GPT header at sector 1 and its entry array.
    PrimaryGpt,
    /// The backup entry array and header at the end of the image.
    BackupGpt,
}

impl Region {
    fn from_name(name: &str) -> Option<Region> {
        match name {
            "protective-mbr" => Some(Region::ProtectiveMbr),
            "primary-gpt" => Some(Region::PrimaryGpt),
            "backup-gpt" => Some(Region::BackupGpt),
            _ => None,
        }
    }

    /// How a report names it.
    pub fn label(self) -> &'static str {
        match self {
            Region::ProtectiveMbr => "protective MBR",
            Region::PrimaryGpt => "primary GPT",
            Region::BackupGpt => "backup GPT",
        }
    }
}

/// One partition-table area with its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRegion {
    pub region: Region,
    pub start_sector: u64,
    pub sector_count: u64,
    pub sha256: String,
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
        Some((_, "reliquary-stick-manifest 1")) => {
            return Err(bad(
                0,
                "version 1 manifests cover neither the partition tables nor the audit \
                 partition; rebuild the stick with this version's build",
            ))
        }
        _ => {
            return Err(bad(
                0,
                &format!("the first line must be {MANIFEST_HEADER:?}"),
            ))
        }
    }
    let (mut root_hash, mut cmdline, mut sectors, mut audit_fs_uuid) = (None, None, None, None);
    let (mut regions, mut partitions) = (Vec::new(), Vec::new());
    for (n, line) in lines {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let number = |s: &str| s.parse::<u64>().map_err(|_| bad(n, "bad sector number"));
        match key {
            "root-hash" if is_hex_digest(rest) => root_hash = Some(rest.to_string()),
            "cmdline" => cmdline = Some(rest.to_string()),
            "sectors" => sectors = Some(number(rest)?),
            "audit-fs-uuid" => {
                audit_fs_uuid = Some(parse_uuid(rest).ok_or_else(|| bad(n, "bad UUID"))?)
            }
            "region" | "partition" => {
                let fields: Vec<&str> = rest.split(' ').collect();
                let [name, start, count, digest] = fields[..] else {
                    return Err(bad(n, &format!("a {key} line has NAME START COUNT SHA256")));
                };
                if !is_hex_digest(digest) {
                    return Err(bad(n, "bad SHA-256"));
                }
                let (start_sector, sector_count) = (number(start)?, number(count)?);
                if start_sector.checked_add(sector_count).is_none() {
                    return Err(bad(n, "the extent overflows"));
                }
                if key == "region" {
                    let region = Region::from_name(name)
                        .ok_or_else(|| bad(n, &format!("unknown region {name:?}")))?;
                    regions.push(ManifestRegion {
                        region,
                        start_sector,
                        sector_count,
                        sha256: digest.to_string(),
                    });
                } else {
                    partitions.push(ManifestPartition {
                        name: name.to_string(),
                        start_sector,
                        sector_count,
                        sha256: digest.to_string(),
                    });
                }
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
    if partitions.iter().any(|p| p.name == AUDIT_PARTITION) {
        return Err(bad(
            0,
            "the audit partition has no digest: it is written on the stick",
        ));
    }
    for region in [Region::ProtectiveMbr, Region::PrimaryGpt, Region::BackupGpt] {
        if !regions.iter().any(|r| r.region == region) {
            return Err(bad(0, &format!("no {} region line", region.label())));
        }
    }
    Ok(StickManifest {
        root_hash,
        cmdline,
        sectors: sectors.ok_or_else(|| bad(0, "no sectors line"))?,
        regions,
        partitions,
        audit_fs_uuid: audit_fs_uuid.ok_or_else(|| bad(0, "no audit-fs-uuid line"))?,
    })
}

/// Compares the stick at `path` with `manifest`. Differences are in the
/// report; errors are only for what could not be read.
pub fn verify_stick(path: &Path, manifest: &StickManifest) -> Result<StickReport, StickError> {
    let mut file = File::open(path).map_err(|source| StickError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // Seek works for block devices, whose metadata length is 0.
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|source| StickError::Read {
            path: path.to_path_buf(),
            offset: 0,
            source,
        })?;
    verify_reader(&file, size, manifest).map_err(|(offset, source)| StickError::Read {
        path: path.to_path_buf(),
        offset,
        source,
    })
}

/// A read that failed: the byte offset and the error.
type ReadFailure = (u64, std::io::Error);

/// [`verify_stick`] over any reader of `size` bytes (a file, a device, or
/// memory for the fuzz target).
pub fn verify_reader<R: ReadAt>(
    stick: &R,
    size: u64,
    manifest: &StickManifest,
) -> Result<StickReport, ReadFailure> {
    let stick = Stick {
        reader: stick,
        size,
    };
    let mut checks = Vec::new();
    let image_bytes = manifest.sectors.saturating_mul(SECTOR);
    if size < image_bytes {
        checks.push(StickCheck {
            item: "size".into(),
            matches: false,
            detail: format!("{size} bytes, smaller than the built image ({image_bytes} bytes)"),
        });
        return Ok(StickReport { checks });
    }

    for region in &manifest.regions {
        let item = region.region.label().to_string();
        checks.push(
            match stick.digest(region.start_sector, region.sector_count)? {
                Some(digest) => compare_digest(item, &region.sha256, &digest),
                None => beyond_the_end(item),
            },
        );
    }

    let (table, _) = partition::summarize(stick.reader, SECTOR as u32, size / SECTOR);
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
        checks.push(
            match stick.digest(expected.start_sector, expected.sector_count)? {
                Some(digest) => compare_digest(item, &expected.sha256, &digest),
                None => beyond_the_end(item),
            },
        );
    }
    for extra in on_stick.iter().filter(|p| {
        let name = p.name.as_deref().unwrap_or("");
        name != AUDIT_PARTITION && !manifest.partitions.iter().any(|m| m.name == name)
    }) {
        checks.push(StickCheck {
            item: format!("partition {}", extra.number),
            matches: false,
            detail: format!(
                "an extra partition ({:?}, sectors {}+{}) the build did not make",
                extra.name.as_deref().unwrap_or(""),
                extra.start_sector,
                extra.sector_count
            ),
        });
    }

    let audit = match on_stick
        .iter()
        .find(|p| p.name.as_deref() == Some(AUDIT_PARTITION))
    {
        Some(p) => stick.audit_file_system(p.start_sector, p.sector_count, manifest)?,
        None => Err("no GPT partition has this name".into()),
    };
    checks.push(StickCheck {
        item: format!("partition {AUDIT_PARTITION}"),
        matches: audit.is_ok(),
        detail: audit.unwrap_or_else(|reason| reason),
    });

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

struct Stick<'a, R: ReadAt> {
    reader: &'a R,
    size: u64,
}

impl<R: ReadAt> Stick<'_, R> {
    fn read(&self, buf: &mut [u8], offset: u64) -> Result<(), ReadFailure> {
        self.reader
            .read_exact_at(buf, offset)
            .map_err(|e| (offset, e))
    }

    /// SHA-256 of sectors `start..start+count`, or `None` when they are not
    /// all on the stick.
    fn digest(&self, start: u64, count: u64) -> Result<Option<String>, ReadFailure> {
        let (Some(offset), Some(len)) = (start.checked_mul(SECTOR), count.checked_mul(SECTOR))
        else {
            return Ok(None);
        };
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Ok(None);
        }
        let mut context = Context::new(&SHA256);
        let mut buf = vec![0u8; READ_CHUNK.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(READ_CHUNK as u64) as usize;
            self.read(&mut buf[..n], offset + done)?;
            context.update(&buf[..n]);
            done += n as u64;
        }
        Ok(Some(hex::encode(context.finish())))
    }

    /// Whether the audit partition holds the audit file system the build
    /// made and nothing else. The inner `Ok` describes what was found, the
    /// inner `Err` what is wrong.
    fn audit_file_system(
        &self,
        start: u64,
        count: u64,
        manifest: &StickManifest,
    ) -> Result<Result<String, String>, ReadFailure> {
        let offset = start.saturating_mul(SECTOR);
        let part_bytes = count.saturating_mul(SECTOR);
        let needed = (EXT4_BOOT_AREA + EXT4_SUPERBLOCK_LEN) as u64;
        if part_bytes < needed || offset.saturating_add(needed) > self.size {
            return Ok(Err("too small or beyond the end of the stick".into()));
        }
        let mut head = vec![0u8; EXT4_BOOT_AREA + EXT4_SUPERBLOCK_LEN];
        self.read(&mut head, offset)?;
        Ok(check_audit_head(&head, part_bytes, &manifest.audit_fs_uuid))
    }

    /// The root hash of a dm-verity hash device at `offset` (format 1, with
    /// its superblock, SHA-256): SHA-256(salt || the top hash block), the
    /// top block being the first after the superblock's block. The inner
    /// `Err` says why it cannot be computed.
    fn verity_root_hash(&self, offset: u64) -> Result<Result<String, String>, ReadFailure> {
        let mut sb = [0u8; VERITY_SUPERBLOCK_LEN];
        if offset.saturating_add(VERITY_SUPERBLOCK_LEN as u64) > self.size {
            return Ok(Err(
                "the verity partition is beyond the end of the stick".into()
            ));
        }
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
        let top_offset = offset + hash_block_size as u64;
        if top_offset.saturating_add(hash_block_size as u64) > self.size {
            return Ok(Err(
                "the verity hash tree is beyond the end of the stick".into()
            ));
        }
        let mut top = vec![0u8; hash_block_size];
        self.read(&mut top, top_offset)?;
        let mut context = Context::new(&SHA256);
        context.update(&sb[88..88 + salt_size]);
        context.update(&top);
        Ok(Ok(hex::encode(context.finish())))
    }
}

/// Checks the first 2 KiB of the audit partition: nothing in ext4's unused
/// boot area (a FAT, an MBR or any boot sector starts there), an ext4
/// superblock with the build's label and UUID, and a file system exactly as
/// large as the partition (no room for anything after it).
fn check_audit_head(head: &[u8], part_bytes: u64, uuid: &[u8; 16]) -> Result<String, String> {
    let (boot_area, sb) = head.split_at(EXT4_BOOT_AREA);
    if let Some(at) = boot_area.iter().position(|&b| b != 0) {
        let what = if boot_area.get(510..512) == Some(&[0x55, 0xaa][..]) {
            "a boot sector (0x55AA)"
        } else {
            "data"
        };
        return Err(format!(
            "{what} at byte {at} before the audit file system, where ext4 keeps zeros"
        ));
    }
    let u16_at = |at: usize| u16::from_le_bytes([sb[at], sb[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    if u16_at(0x38) != EXT4_MAGIC {
        return Err("no ext4 file system (the audit log's) at its start".into());
    }
    let label = String::from_utf8_lossy(&sb[0x78..0x88])
        .trim_end_matches('\0')
        .to_string();
    if label != AUDIT_LABEL || sb[0x68..0x78] != uuid[..] {
        return Err(format!(
            "an ext4 file system labelled {label:?} with UUID {}, not the audit file system \
             the build made ({AUDIT_LABEL:?}, {})",
            format_uuid(&sb[0x68..0x78]),
            format_uuid(uuid)
        ));
    }
    const INCOMPAT_64BIT: u32 = 0x80;
    let log_block_size = u32_at(0x18);
    let blocks = u64::from(u32_at(0x04))
        | if u32_at(0x60) & INCOMPAT_64BIT != 0 {
            u64::from(u32_at(0x150)) << 32
        } else {
            0
        };
    let fs_bytes = (log_block_size <= 6)
        .then(|| blocks.checked_mul(1024u64 << log_block_size))
        .flatten();
    if fs_bytes != Some(part_bytes) {
        return Err(format!(
            "the audit file system's size ({}) is not the partition's ({part_bytes} bytes)",
            fs_bytes.map_or("invalid".to_string(), |b| format!("{b} bytes"))
        ));
    }
    Ok(format!(
        "the audit file system ({AUDIT_LABEL}, {}) and nothing before it",
        format_uuid(uuid)
    ))
}

fn beyond_the_end(item: String) -> StickCheck {
    StickCheck {
        item,
        matches: false,
        detail: "beyond the end of the stick".into(),
    }
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex_digits: String = text.chars().filter(|&c| c != '-').collect();
    if text.len() != 36 || hex_digits.len() != 32 {
        return None;
    }
    let mut uuid = [0u8; 16];
    hex::decode_to_slice(&hex_digits, &mut uuid).ok()?;
    Some(uuid)
}

fn format_uuid(bytes: &[u8]) -> String {
    let h = hex::encode(bytes);
    if h.len() != 32 {
        return h;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
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

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "bf34ad320b1415c7a31b6e049f7ff0c0fa73c3bd0f8c0be0f43dea51310f7b25";
    const UUID: &str = "52454c51-4155-4449-5400-000000000001";

    fn manifest_text(cmdline: &str) -> String {
        format!(
            "{MANIFEST_HEADER}\nroot-hash {HASH}\ncmdline {cmdline}\nsectors 230640\n\
             region protective-mbr 0 1 {HASH}\nregion primary-gpt 1 33 {HASH}\n\
             region backup-gpt 230607 33 {HASH}\n\
             partition reliquary-root 102400 8728 {HASH}\naudit-fs-uuid {UUID}\n"
        )
    }

    #[test]
    fn parses_a_manifest() {
        let m = parse_manifest(&manifest_text(&format!("quiet reliquary.roothash={HASH}")))
            .expect("parses");
        assert_eq!(m.root_hash, HASH);
        assert_eq!(m.sectors, 230640);
        assert_eq!(m.regions.len(), 3);
        assert_eq!(m.regions[2].region, Region::BackupGpt);
        assert_eq!(format_uuid(&m.audit_fs_uuid), UUID);
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
    fn refuses_unknown_lines_a_wrong_header_and_version_1() {
        let text = manifest_text(&format!("reliquary.roothash={HASH}"));
        assert!(parse_manifest(&(text.clone() + "extra line\n")).is_err());
        assert!(parse_manifest(&text.replace("primary-gpt", "secondary-gpt")).is_err());
        assert!(parse_manifest(&text.replace("region backup-gpt", "#")).is_err());
        assert!(parse_manifest("reliquary-stick-manifest 3\n").is_err());
        let old = parse_manifest("reliquary-stick-manifest 1\n").expect_err("refused");
        assert!(old.to_string().contains("rebuild the stick"), "{old}");
    }

    #[test]
    fn refuses_a_digest_for_the_audit_partition() {
        let text = manifest_text(&format!("reliquary.roothash={HASH}"))
            + &format!("partition reliquary-audit 1 1 {HASH}\n");
        let err = parse_manifest(&text).expect_err("refused");
        assert!(err.to_string().contains("audit partition"), "{err}");
    }

    /// The first 2 KiB of an ext4 file system as `check_audit_head` reads them.
    fn audit_head(uuid: &[u8; 16], label: &str, blocks: u32) -> Vec<u8> {
        let mut head = vec![0u8; 2048];
        let sb = &mut head[1024..];
        sb[0x04..0x08].copy_from_slice(&blocks.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB blocks
        sb[0x38..0x3a].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        sb[0x68..0x78].copy_from_slice(uuid);
        sb[0x78..0x78 + label.len()].copy_from_slice(label.as_bytes());
        head
    }

    #[test]
    fn audit_partition_must_hold_the_built_file_system_and_nothing_else() {
        let uuid = parse_uuid(UUID).expect("uuid");
        let size = 64 << 20;
        let good = audit_head(&uuid, AUDIT_LABEL, 16384);
        assert!(check_audit_head(&good, size, &uuid).is_ok());

        let mut fat_boot_sector = good.clone();
        fat_boot_sector[3..11].copy_from_slice(b"mkfs.fat");
        fat_boot_sector[510..512].copy_from_slice(&[0x55, 0xaa]);
        let err = check_audit_head(&fat_boot_sector, size, &uuid).expect_err("refused");
        assert!(err.contains("boot sector"), "{err}");

        let other = audit_head(&[7; 16], AUDIT_LABEL, 16384);
        let err = check_audit_head(&other, size, &uuid).expect_err("refused");
        assert!(err.contains("not the audit file system"), "{err}");

        let smaller = audit_head(&uuid, AUDIT_LABEL, 8192);
        let err = check_audit_head(&smaller, size, &uuid).expect_err("refused");
        assert!(err.contains("size"), "{err}");

        let err = check_audit_head(&[0u8; 2048], size, &uuid).expect_err("refused");
        assert!(err.contains("no ext4"), "{err}");
    }

    #[test]
    fn a_stick_smaller_than_its_image_is_reported_not_read() {
        let text = manifest_text(&format!("reliquary.roothash={HASH}"));
        let manifest = parse_manifest(&text).expect("parses");
        let report = verify_reader(&vec![0u8; 4096], 4096, &manifest).expect("no read error");
        assert!(!report.all_match());
        assert_eq!(report.checks[0].item, "size");
    }
}
