//! FAT12/16/32: the file allocation table. A cluster whose entry is 0 is
//! free; everything before the data area (boot sectors, FATs, the
//! FAT12/16 root directory) is always kept. The type follows from the
//! cluster count, as Microsoft's FAT specification defines it, except
//! that a boot sector laid out as FAT32 is FAT32 at any count.
//!
//! The FAT is trusted only after two cross-checks: every copy of it holds
//! the same entries, and every directory entry's cluster chain is sound
//! (see [`walk_directories`]).

use reliquary_image::{FileSystemKind, ReadAt};

use super::{FreeRuns, FreeSpace, FsError, PartitionBytes};

/// The largest FAT held for the cross-checks: a FAT32 of 2^25 clusters
/// (128 GiB of 4 KiB clusters). A bigger one keeps its partition whole.
const MAX_FAT_BYTES: u64 = 128 << 20;
/// The other FAT copies are compared this many bytes at a time.
const COMPARE_PIECE: usize = 1 << 20;
/// Directory paths in messages are cut to this many bytes.
const MAX_PATH_TEXT: usize = 256;

struct Bpb {
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    reserved_sectors: u64,
    fat_count: u64,
    fat_sectors: u64,
    root_entries: u64,
    root_cluster: u32,
    data_start_sector: u64,
    clusters: u64,
    total_sectors: u64,
    kind: FileSystemKind,
    volume_id: u32,
    /// The boot sector's "volume dirty" state bit (set while mounted).
    dirty_flag: bool,
    /// FAT32 with mirroring off: only this FAT is used.
    active_fat: Option<u64>,
}

/// Which FAT `head` (the partition's first sectors) holds, if any.
pub(super) fn identify(head: &[u8]) -> Option<FileSystemKind> {
    parse_bpb(head).ok().map(|b| b.kind)
}

pub(super) fn free_space<S: ReadAt + ?Sized>(
    bytes: &PartitionBytes<'_, S>,
    mut free: FreeRuns,
) -> Result<FreeSpace, FsError> {
    let mut head = vec![0u8; 512];
    bytes.read(&mut head, 0)?;
    let bpb = parse_bpb(&head)?;
    if bpb.total_sectors * bpb.bytes_per_sector > bytes.len() {
        return Err(FsError::Corrupt(format!(
            "the volume's {} sectors exceed the partition's {} bytes",
            bpb.total_sectors,
            bytes.len()
        )));
    }
    if bpb.dirty_flag {
        return Err(FsError::NotClean("the FAT boot sector's dirty flag is set"));
    }
    let entries = bpb.clusters + 2;
    let fat_bytes = table_bytes(bpb.kind, entries);
    if fat_bytes > bpb.fat_sectors * bpb.bytes_per_sector {
        return Err(FsError::Corrupt(format!(
            "the FAT of {} sectors is too small for {} clusters",
            bpb.fat_sectors, bpb.clusters
        )));
    }
    if fat_bytes > MAX_FAT_BYTES {
        return Err(FsError::Unsupported(format!(
            "a FAT of {fat_bytes} bytes, more than the {MAX_FAT_BYTES} its cross-checks may hold"
        )));
    }

    let fat_offset = |n: u64| (bpb.reserved_sectors + n * bpb.fat_sectors) * bpb.bytes_per_sector;
    let mut fat = vec![0u8; fat_bytes as usize];
    bytes.read(&mut fat, fat_offset(bpb.active_fat.unwrap_or(0)))?;
    if !clean_shutdown(&fat, bpb.kind) {
        return Err(FsError::NotClean("the FAT's clean-shutdown bit is clear"));
    }
    let mut proof = Vec::new();
    match bpb.active_fat {
        None => {
            compare_copies(bytes, &bpb, &fat, fat_offset)?;
            proof.push(format!("all {} copies of the FAT agree", bpb.fat_count));
        }
        Some(n) => proof.push(format!(
            "FAT mirroring is off; FAT {} is the active one",
            n + 1
        )),
    }
    let walked = walk_directories(bytes, &bpb, &fat)?;
    proof.push(format!(
        "the cluster chains of {} directory entries ({} clusters) end properly, \
         without loops, cross-links, free or bad clusters, and hold their files' sizes",
        walked.entries, walked.clusters
    ));

    let cluster_bytes = bpb.sectors_per_cluster * bpb.bytes_per_sector;
    let data_start = bpb.data_start_sector * bpb.bytes_per_sector;
    for cluster in 2..entries {
        if entry(&fat, bpb.kind, cluster) == 0 {
            let at = data_start + (cluster - 2) * cluster_bytes;
            free.push(at..at + cluster_bytes);
        }
    }
    Ok(FreeSpace {
        kind: bpb.kind,
        volume_serial: Some(format!(
            "{:04X}-{:04X}",
            bpb.volume_id >> 16,
            bpb.volume_id & 0xffff
        )),
        free: free.into_runs(),
        proof,
    })
}

/// Every FAT copy must hold the same entries as `fat` (from cluster 2 on:
/// entries 0 and 1 carry the media byte and state bits). A copy that
/// differs means one of them lies, and which one is unknown.
fn compare_copies<S: ReadAt + ?Sized>(
    bytes: &PartitionBytes<'_, S>,
    bpb: &Bpb,
    fat: &[u8],
    fat_offset: impl Fn(u64) -> u64,
) -> Result<(), FsError> {
    // Entry 2 starts at byte 3 on FAT12, 4 on FAT16, 8 on FAT32.
    let skip = table_bytes(bpb.kind, 2) as usize;
    let mut piece = vec![0u8; COMPARE_PIECE];
    for copy in 1..bpb.fat_count {
        let mut at = skip;
        while at < fat.len() {
            let len = (fat.len() - at).min(COMPARE_PIECE);
            bytes.read(&mut piece[..len], fat_offset(copy) + at as u64)?;
            if let Some(differs) = (0..len).find(|&i| piece[i] != fat[at + i]) {
                return Err(FsError::MapContradicted(format!(
                    "FAT {} differs from FAT 1 at byte {} of the table",
                    copy + 1,
                    at + differs
                )));
            }
            at += len;
        }
    }
    Ok(())
}

/// What the directory walk went through.
struct Walked {
    entries: u64,
    clusters: u64,
}

/// Walks every directory from the root and every entry's cluster chain:
/// a chain must end with an end-of-chain mark, never reach a free or bad
/// cluster, a cluster outside the volume or one already reached (a loop
/// or a cross-link), and a file's chain must hold its size. Each cluster
/// is visited once (a bitmap of the volume's clusters), so time and
/// memory grow with the volume, whatever its directories claim.
fn walk_directories<S: ReadAt + ?Sized>(
    bytes: &PartitionBytes<'_, S>,
    bpb: &Bpb,
    fat: &[u8],
) -> Result<Walked, FsError> {
    let cluster_bytes = (bpb.sectors_per_cluster * bpb.bytes_per_sector) as usize;
    let data_start = bpb.data_start_sector * bpb.bytes_per_sector;
    let mut chains = Chains {
        fat,
        kind: bpb.kind,
        clusters: bpb.clusters,
        visited: vec![0u8; (bpb.clusters + 2).div_ceil(8) as usize],
    };
    let mut walked = Walked {
        entries: 0,
        clusters: 0,
    };
    // Directories still to read: (their clusters, or None for the fixed
    // FAT12/16 root; their path).
    let mut pending: Vec<(Option<Vec<u32>>, String)> = Vec::new();
    if bpb.kind == FileSystemKind::Fat32 {
        let root = chains.walk(bpb.root_cluster, "the root directory")?;
        walked.clusters += root.len() as u64;
        pending.push((Some(root), String::new()));
    } else {
        pending.push((None, String::new()));
    }
    let mut block = vec![0u8; cluster_bytes.max(512)];
    while let Some((clusters, path)) = pending.pop() {
        let blocks: Vec<(u64, usize)> = match clusters {
            Some(list) => list
                .iter()
                .map(|&c| {
                    (
                        data_start + u64::from(c - 2) * cluster_bytes as u64,
                        cluster_bytes,
                    )
                })
                .collect(),
            None => {
                let start =
                    (bpb.reserved_sectors + bpb.fat_count * bpb.fat_sectors) * bpb.bytes_per_sector;
                let len = bpb.root_entries * 32;
                (0..len.div_ceil(512))
                    .map(|i| (start + i * 512, (len - i * 512).min(512) as usize))
                    .collect()
            }
        };
        'blocks: for (offset, len) in blocks {
            let block = &mut block[..len];
            bytes.read(block, offset)?;
            for raw in block.chunks_exact(32) {
                match raw[0] {
                    0 => break 'blocks,
                    0xe5 | b'.' => continue,
                    _ => {}
                }
                let attributes = raw[11];
                // Long-name parts and the volume label own no clusters.
                if attributes & 0x0f == 0x0f || attributes & 0x08 != 0 {
                    continue;
                }
                let high = if bpb.kind == FileSystemKind::Fat32 {
                    u32::from(le_u16(raw, 20)) << 16
                } else {
                    0
                };
                let first = high | u32::from(le_u16(raw, 26));
                let size = u64::from(le_u32(raw, 28));
                let name = entry_path(&path, &raw[..11]);
                walked.entries += 1;
                if first == 0 {
                    if size > 0 {
                        return Err(FsError::MapContradicted(format!(
                            "{name} is {size} bytes but owns no cluster"
                        )));
                    }
                    continue;
                }
                let chain = chains.walk(first, &name)?;
                walked.clusters += chain.len() as u64;
                if attributes & 0x10 != 0 {
                    pending.push((Some(chain), name));
                } else if (chain.len() as u64) < size.div_ceil(cluster_bytes as u64) {
                    return Err(FsError::MapContradicted(format!(
                        "{name} is {size} bytes but its chain holds only {} clusters of {cluster_bytes} bytes",
                        chain.len()
                    )));
                }
            }
        }
    }
    Ok(walked)
}

/// Follows chains through arbitrary bytes taken as a FAT (for the
/// `fat_chains` fuzz target): the first byte picks FAT12, 16 or 32, and
/// a chain starts at each of the first clusters in turn.
pub(super) fn fuzz_chains(data: &[u8]) {
    let Some((&pick, fat)) = data.split_first() else {
        return;
    };
    let kind = match pick % 3 {
        0 => FileSystemKind::Fat12,
        1 => FileSystemKind::Fat16,
        _ => FileSystemKind::Fat32,
    };
    let len = fat.len() as u64;
    let entries = match kind {
        // The last FAT12 entry's two bytes must lie inside.
        FileSystemKind::Fat12 => len.saturating_sub(1) * 2 / 3,
        FileSystemKind::Fat16 => len / 2,
        _ => len / 4,
    };
    if entries < 3 {
        return;
    }
    let mut chains = Chains {
        fat,
        kind,
        clusters: entries - 2,
        visited: vec![0u8; entries.div_ceil(8) as usize],
    };
    for first in 2..entries.min(64) {
        let _ = chains.walk(first as u32, "fuzz");
    }
}

/// `parent/NAME.EXT` from a short directory entry name, cut to
/// [`MAX_PATH_TEXT`] bytes.
fn entry_path(parent: &str, short: &[u8]) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_string();
    let (base, ext) = (text(&short[..8]), text(&short[8..11]));
    let mut path = format!("{parent}/{base}");
    if !ext.is_empty() {
        path = format!("{path}.{ext}");
    }
    if path.len() > MAX_PATH_TEXT {
        let mut cut = MAX_PATH_TEXT;
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        path.truncate(cut);
    }
    path
}

/// Follows cluster chains through the FAT, remembering every cluster
/// reached.
struct Chains<'a> {
    fat: &'a [u8],
    kind: FileSystemKind,
    clusters: u64,
    visited: Vec<u8>,
}

impl Chains<'_> {
    /// The clusters of the chain starting at `first`, owned by `owner`.
    /// Directory chains are kept to be read; a file's list is short-lived.
    fn walk(&mut self, first: u32, owner: &str) -> Result<Vec<u32>, FsError> {
        let (bad, end_of_chain) = match self.kind {
            FileSystemKind::Fat12 => (0xff7, 0xff8),
            FileSystemKind::Fat16 => (0xfff7, 0xfff8),
            _ => (0x0fff_fff7, 0x0fff_fff8),
        };
        let lie = |what: String| Err(FsError::MapContradicted(format!("{owner}: {what}")));
        let mut chain = Vec::new();
        let mut cluster = first;
        loop {
            let c = u64::from(cluster);
            if c < 2 || c >= self.clusters + 2 {
                return lie(format!(
                    "its chain reaches cluster {c}, outside the volume's clusters"
                ));
            }
            let (byte, mask) = ((c / 8) as usize, 1u8 << (c % 8));
            if self.visited[byte] & mask != 0 {
                return lie(format!(
                    "its chain reaches cluster {c} a second time (a loop or a cross-link)"
                ));
            }
            self.visited[byte] |= mask;
            chain.push(cluster);
            let next = entry(self.fat, self.kind, c);
            if next == 0 {
                return lie(format!(
                    "its chain reaches cluster {c}, which the FAT marks free"
                ));
            }
            if next == bad {
                return lie(format!(
                    "its chain reaches cluster {c}, which the FAT marks bad"
                ));
            }
            if next >= end_of_chain {
                return Ok(chain);
            }
            cluster = next;
        }
    }
}

fn parse_bpb(b: &[u8]) -> Result<Bpb, FsError> {
    let not_fat = |what: &str| Err(FsError::Corrupt(format!("the FAT boot sector's {what}")));
    if b.len() < 512 || b[510] != 0x55 || b[511] != 0xaa {
        return not_fat("signature is missing");
    }
    if b[0] != 0xeb && b[0] != 0xe9 {
        return not_fat("jump instruction is missing");
    }
    let bytes_per_sector = u64::from(le_u16(b, 11));
    let sectors_per_cluster = u64::from(b[13]);
    let reserved_sectors = u64::from(le_u16(b, 14));
    let fat_count = u64::from(b[16]);
    let root_entries = u64::from(le_u16(b, 17));
    let total_sectors = match le_u16(b, 19) {
        0 => u64::from(le_u32(b, 32)),
        n => u64::from(n),
    };
    let fat_sectors = match le_u16(b, 22) {
        0 => u64::from(le_u32(b, 36)),
        n => u64::from(n),
    };
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
        return not_fat("sector size is invalid");
    }
    if sectors_per_cluster == 0 || !sectors_per_cluster.is_power_of_two() {
        return not_fat("cluster size is invalid");
    }
    if reserved_sectors == 0 || fat_count == 0 || fat_sectors == 0 || total_sectors == 0 {
        return not_fat("geometry is invalid");
    }
    let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
    let data_start_sector = reserved_sectors + fat_count * fat_sectors + root_sectors;
    if data_start_sector >= total_sectors {
        return not_fat("data area starts beyond the volume");
    }
    let clusters = (total_sectors - data_start_sector) / sectors_per_cluster;
    // A boot sector with FAT32's layout (no 16-bit FAT size, no fixed root)
    // is FAT32 at any cluster count, as Windows and Linux read it: small
    // ESPs and FAT32 on 4Kn disks have fewer than 65,525 clusters.
    let fat32_layout = le_u16(b, 22) == 0 && root_entries == 0;
    let kind = if fat32_layout {
        FileSystemKind::Fat32
    } else if clusters < 4085 {
        FileSystemKind::Fat12
    } else if clusters < 65525 {
        FileSystemKind::Fat16
    } else {
        FileSystemKind::Fat32
    };
    if (kind == FileSystemKind::Fat32) != (root_entries == 0) {
        return not_fat("root directory does not match its FAT type");
    }
    let (volume_id, state) = if kind == FileSystemKind::Fat32 {
        (le_u32(b, 67), b[65])
    } else {
        (le_u32(b, 39), b[37])
    };
    let ext_flags = le_u16(b, 40);
    const NO_MIRRORING: u16 = 0x80;
    let active_fat = (kind == FileSystemKind::Fat32 && ext_flags & NO_MIRRORING != 0)
        .then_some(u64::from(ext_flags & 0xf));
    if active_fat.is_some_and(|n| n >= fat_count) {
        return not_fat("active FAT does not exist");
    }
    Ok(Bpb {
        bytes_per_sector,
        sectors_per_cluster,
        reserved_sectors,
        fat_count,
        fat_sectors,
        root_entries,
        root_cluster: le_u32(b, 44),
        data_start_sector,
        clusters,
        total_sectors,
        kind,
        volume_id,
        dirty_flag: state & 0x01 != 0,
        active_fat,
    })
}

/// The bytes that `entries` FAT entries take (from entry 0).
fn table_bytes(kind: FileSystemKind, entries: u64) -> u64 {
    match kind {
        FileSystemKind::Fat12 => (entries * 3).div_ceil(2),
        FileSystemKind::Fat16 => entries * 2,
        _ => entries * 4,
    }
}

/// FAT16 and FAT32 keep a clean-shutdown bit in entry 1; FAT12 has none.
fn clean_shutdown(fat: &[u8], kind: FileSystemKind) -> bool {
    match kind {
        FileSystemKind::Fat16 => entry(fat, kind, 1) & 0x8000 != 0,
        FileSystemKind::Fat32 => entry(fat, kind, 1) & 0x0800_0000 != 0,
        _ => true,
    }
}

/// The entry of `cluster` in `fat`, the table from entry 0.
fn entry(fat: &[u8], kind: FileSystemKind, cluster: u64) -> u32 {
    let n = cluster as usize;
    match kind {
        FileSystemKind::Fat12 => {
            let at = n + n / 2;
            let pair = u32::from(le_u16(fat, at));
            if n % 2 == 0 {
                pair & 0xfff
            } else {
                pair >> 4
            }
        }
        FileSystemKind::Fat16 => u32::from(le_u16(fat, n * 2)),
        _ => le_u32(fat, n * 4) & 0x0fff_ffff,
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAT32 of 2 million 512-byte clusters, as a "disk" holding only its
    /// boot sector and FAT (the data area is never read).
    fn fat32(entry_of: impl Fn(u64) -> u32) -> (Vec<u8>, u64, u64) {
        const CLUSTERS: u64 = 2_000_000;
        const RESERVED: u64 = 32;
        let fat_sectors = ((CLUSTERS + 2) * 4).div_ceil(512);
        let total_sectors = RESERVED + fat_sectors + CLUSTERS;
        // The root directory (cluster 2, empty) is the one data cluster read.
        let mut disk = vec![0u8; ((RESERVED + fat_sectors + 1) * 512) as usize];
        disk[0] = 0xeb;
        disk[11..13].copy_from_slice(&512u16.to_le_bytes());
        disk[13] = 1;
        disk[14..16].copy_from_slice(&(RESERVED as u16).to_le_bytes());
        disk[16] = 1;
        disk[32..36].copy_from_slice(&(total_sectors as u32).to_le_bytes());
        disk[36..40].copy_from_slice(&(fat_sectors as u32).to_le_bytes());
        disk[44..48].copy_from_slice(&2u32.to_le_bytes());
        disk[510] = 0x55;
        disk[511] = 0xaa;
        let fat = (RESERVED * 512) as usize;
        disk[fat..fat + 4].copy_from_slice(&0x0fff_fff8u32.to_le_bytes());
        disk[fat + 4..fat + 8].copy_from_slice(&0x0fff_ffffu32.to_le_bytes());
        for cluster in 2..CLUSTERS + 2 {
            let at = fat + cluster as usize * 4;
            let value = if cluster == 2 {
                0x0fff_ffff
            } else {
                entry_of(cluster)
            };
            disk[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        let data_start = (RESERVED + fat_sectors) * 512;
        (disk, total_sectors * 512, data_start)
    }

    /// Free clusters between every fourth used one make runs far shorter
    /// than capture unmaps: none is kept, so a fragmented volume cannot
    /// fill memory with runs. A long free stretch comes out whole.
    #[test]
    fn short_free_runs_are_dropped_and_a_long_one_is_whole() {
        let free_stretch = 1_000_000..1_200_000;
        let (disk, len, data_start) = fat32(|cluster| {
            if free_stretch.contains(&cluster) || cluster % 4 != 0 {
                0
            } else {
                0x0fff_ffff
            }
        });
        let bytes = PartitionBytes {
            disk: &disk,
            start: 0,
            len,
        };
        let found = free_space(&bytes, FreeRuns::new(64 << 10)).expect("a clean FAT32");
        assert_eq!(found.kind, FileSystemKind::Fat32);
        // Clusters 999,997 to 999,999 are free and 999,996 used, so the run
        // starts three clusters before the stretch; it ends at the used
        // cluster 1,200,000.
        let cluster_at = |c: u64| data_start + (c - 2) * 512;
        assert_eq!(found.free, vec![cluster_at(999_997)..cluster_at(1_200_000)]);
    }
}
