//! A Windows-like MBR disk, generated without root or external tools: a
//! small active "System Reserved" partition and a large NTFS-like data
//! partition, both starting with an NTFS boot sector and holding real
//! bytes (files copied from `/usr/share` and `/usr/lib`), with free space
//! left zero as on a real controller disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const SECTOR: u64 = 512;
/// Windows 7 aligns partitions to 1 MiB.
const ALIGN_SECTORS: u64 = 2048;
const MBR_SIGNATURE: u32 = 0x5E1A_C0DE;
const NTFS_TYPE: u8 = 0x07;
/// Largest single file copied in, so one big library does not fill the disk.
const MAX_FILE_BYTES: u64 = 8 << 20;
/// Where content comes from.
const CONTENT_ROOTS: [&str; 2] = ["/usr/share", "/usr/lib"];

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("the demo disk must be at least 64 MiB, not {0} MiB")]
    TooSmall(u64),
    #[error("cannot write the demo disk {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    pub size_bytes: u64,
    /// (start sector, sector count) of each partition.
    pub partitions: [(u64, u64); 2],
    pub content_bytes: u64,
}

/// Writes a `size_mib` MiB disk to `path`, filling about `fill_percent` of
/// the data partition with file content.
pub fn generate(path: &Path, size_mib: u64, fill_percent: u64) -> Result<DiskLayout, DiskError> {
    if size_mib < 64 {
        return Err(DiskError::TooSmall(size_mib));
    }
    let write_err = |source| DiskError::Write {
        path: path.to_path_buf(),
        source,
    };
    let size_bytes = size_mib << 20;
    let total_sectors = size_bytes / SECTOR;
    // Win7's "System Reserved" is 100 MiB on big disks; scale it down here.
    let system = (ALIGN_SECTORS, (size_mib / 8).clamp(8, 100) * 2048);
    let data_start = system.0 + system.1;
    let data = (data_start, total_sectors - data_start);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(write_err)?;
    file.set_len(size_bytes).map_err(write_err)?;
    file.write_all_at(&mbr(&[(system, true), (data, false)]), 0)
        .map_err(write_err)?;

    let mut content = ContentSource::new();
    let mut content_bytes = 0;
    for (i, &(start, count)) in [system, data].iter().enumerate() {
        let boot = ntfs_boot_sector(count, i == 0);
        file.write_all_at(&boot, start * SECTOR)
            .map_err(write_err)?;
        // NTFS keeps a backup boot sector in the partition's last sector.
        file.write_all_at(&boot, (start + count - 1) * SECTOR)
            .map_err(write_err)?;
        let budget = if i == 0 {
            count * SECTOR / 4
        } else {
            count * SECTOR * fill_percent / 100
        };
        content_bytes +=
            fill_partition(&file, start, count, budget, &mut content).map_err(write_err)?;
    }
    file.sync_all().map_err(write_err)?;
    Ok(DiskLayout {
        size_bytes,
        partitions: [system, data],
        content_bytes,
    })
}

/// A DOS partition table with boot code, a disk signature and two entries.
fn mbr(parts: &[((u64, u64), bool)]) -> [u8; 512] {
    let mut sector = [0u8; 512];
    let code =
        b"\xfa\x33\xc0\x8e\xd0\xbc\x00\x7c Reliquary demo boot code: this disk was generated for recovery-tui --demo";
    sector[..code.len()].copy_from_slice(code);
    sector[440..444].copy_from_slice(&MBR_SIGNATURE.to_le_bytes());
    for (i, &((start, count), active)) in parts.iter().enumerate() {
        let entry = &mut sector[446 + 16 * i..446 + 16 * (i + 1)];
        entry[0] = if active { 0x80 } else { 0 };
        // CHS fields hold the "use LBA" marker, as on disks past 8 GiB.
        entry[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
        entry[4] = NTFS_TYPE;
        entry[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
        entry[8..12].copy_from_slice(&(start as u32).to_le_bytes());
        entry[12..16].copy_from_slice(&(count as u32).to_le_bytes());
    }
    sector[510] = 0x55;
    sector[511] = 0xAA;
    sector
}

/// The fields of an NTFS boot sector that tools look at.
fn ntfs_boot_sector(sectors: u64, system: bool) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[0..3].copy_from_slice(&[0xEB, 0x52, 0x90]);
    s[3..11].copy_from_slice(b"NTFS    ");
    s[11..13].copy_from_slice(&512u16.to_le_bytes());
    s[13] = 8; // sectors per cluster
    s[21] = 0xF8; // fixed disk
    s[40..48].copy_from_slice(&(sectors - 1).to_le_bytes());
    s[48..56].copy_from_slice(&4u64.to_le_bytes()); // $MFT at cluster 4
    s[56..64].copy_from_slice(&(sectors / 16).to_le_bytes()); // $MFTMirr
    s[64] = 0xF6; // 1 KiB file records
    let label: &[u8] = if system {
        b"System Reserved"
    } else {
        b"Windows"
    };
    s[80..80 + label.len()].copy_from_slice(label);
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// Copies files into a partition as an MFT-like run of 1 KiB `FILE0`
/// records followed by the files' bytes, cluster-aligned, up to `budget`.
fn fill_partition(
    file: &File,
    start: u64,
    count: u64,
    budget: u64,
    content: &mut ContentSource,
) -> std::io::Result<u64> {
    const CLUSTER: u64 = 4096;
    let part_end = (start + count - 1) * SECTOR;
    let mft = start * SECTOR + 4 * CLUSTER;
    let mut record_at = mft;
    // File data starts after room for the MFT records.
    let mut data_at = mft + (4 << 20);
    let mut written = 0;
    while written < budget {
        let Some((name, bytes)) = content.next_file() else {
            break;
        };
        let len = bytes.len() as u64;
        if data_at + len >= part_end || record_at + 1024 >= mft + (4 << 20) {
            break;
        }
        let mut record = [0u8; 1024];
        record[..5].copy_from_slice(b"FILE0");
        record[8..16].copy_from_slice(&data_at.to_le_bytes());
        record[16..24].copy_from_slice(&len.to_le_bytes());
        let utf16: Vec<u8> = name
            .encode_utf16()
            .take(480)
            .flat_map(u16::to_le_bytes)
            .collect();
        record[24..24 + utf16.len()].copy_from_slice(&utf16);
        file.write_all_at(&record, record_at)?;
        file.write_all_at(&bytes, data_at)?;
        record_at += 1024;
        data_at = (data_at + len).div_ceil(CLUSTER) * CLUSTER;
        written += len;
    }
    Ok(written)
}

/// Regular files under the content roots, walked lazily in name order.
struct ContentSource {
    pending: Vec<PathBuf>,
}

impl ContentSource {
    fn new() -> Self {
        Self {
            pending: CONTENT_ROOTS.iter().rev().map(PathBuf::from).collect(),
        }
    }

    /// The next readable, non-empty regular file and its bytes.
    fn next_file(&mut self) -> Option<(String, Vec<u8>)> {
        while let Some(path) = self.pending.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    let mut children: Vec<PathBuf> =
                        entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                    children.sort();
                    self.pending.extend(children.into_iter().rev());
                }
            } else if meta.is_file() && meta.len() > 0 && meta.len() <= MAX_FILE_BYTES {
                if let Ok(bytes) = std::fs::read(&path) {
                    return Some((path.display().to_string(), bytes));
                }
            }
        }
        None
    }
}
