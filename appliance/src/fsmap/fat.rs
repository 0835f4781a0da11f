//! FAT12/16/32: the first file allocation table. A cluster whose entry is
//! 0 is free; everything before the data area (boot sectors, FATs, the
//! FAT12/16 root directory) is always kept. The type follows from the
//! cluster count, as Microsoft's FAT specification defines it.

use reliquary_image::{FileSystemKind, ReadAt};

use super::{FreeRuns, FreeSpace, FsError, PartitionBytes};

/// The largest FAT read: a FAT32 of 2^28 clusters.
const MAX_FAT_BYTES: u64 = 1 << 30;
/// The FAT is read this many entries at a time (at most 4 MiB), so memory
/// stays bounded on a big volume. An even number: FAT12 packs two 12-bit
/// entries in 3 bytes, so every piece then starts on a whole byte.
const PIECE_ENTRIES: u64 = 1 << 20;

struct Bpb {
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    reserved_sectors: u64,
    fat_sectors: u64,
    data_start_sector: u64,
    clusters: u64,
    total_sectors: u64,
    kind: FileSystemKind,
    volume_id: u32,
    /// The boot sector's "volume dirty" state bit (set while mounted).
    dirty_flag: bool,
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
    if fat_bytes > bpb.fat_sectors * bpb.bytes_per_sector || fat_bytes > MAX_FAT_BYTES {
        return Err(FsError::Corrupt(format!(
            "the FAT of {} sectors is too small for {} clusters",
            bpb.fat_sectors, bpb.clusters
        )));
    }

    let fat_start = bpb.reserved_sectors * bpb.bytes_per_sector;
    let cluster_bytes = bpb.sectors_per_cluster * bpb.bytes_per_sector;
    let data_start = bpb.data_start_sector * bpb.bytes_per_sector;
    let mut piece = vec![0u8; table_bytes(bpb.kind, entries.min(PIECE_ENTRIES)) as usize];
    let mut first = 0;
    while first < entries {
        let count = (entries - first).min(PIECE_ENTRIES);
        let piece = &mut piece[..table_bytes(bpb.kind, count) as usize];
        bytes.read(piece, fat_start + table_bytes(bpb.kind, first))?;
        if first == 0 && !clean_shutdown(piece, bpb.kind) {
            return Err(FsError::NotClean("the FAT's clean-shutdown bit is clear"));
        }
        for n in 0..count {
            let cluster = first + n;
            if cluster >= 2 && entry(piece, bpb.kind, n) == 0 {
                let at = data_start + (cluster - 2) * cluster_bytes;
                free.push(at..at + cluster_bytes);
            }
        }
        first += count;
    }
    Ok(FreeSpace {
        kind: bpb.kind,
        volume_serial: Some(format!(
            "{:04X}-{:04X}",
            bpb.volume_id >> 16,
            bpb.volume_id & 0xffff
        )),
        free: free.into_runs(),
    })
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
    let kind = if clusters < 4085 {
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
    Ok(Bpb {
        bytes_per_sector,
        sectors_per_cluster,
        reserved_sectors,
        fat_sectors,
        data_start_sector,
        clusters,
        total_sectors,
        kind,
        volume_id,
        dirty_flag: state & 0x01 != 0,
    })
}

/// The bytes that `entries` FAT entries take (from an even entry on FAT12).
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

/// The entry of `cluster` in `fat`, a piece of the table that starts with
/// an even entry and holds this one.
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
        let mut disk = vec![0u8; ((RESERVED + fat_sectors) * 512) as usize];
        disk[0] = 0xeb;
        disk[11..13].copy_from_slice(&512u16.to_le_bytes());
        disk[13] = 1;
        disk[14..16].copy_from_slice(&(RESERVED as u16).to_le_bytes());
        disk[16] = 1;
        disk[32..36].copy_from_slice(&(total_sectors as u32).to_le_bytes());
        disk[36..40].copy_from_slice(&(fat_sectors as u32).to_le_bytes());
        disk[510] = 0x55;
        disk[511] = 0xaa;
        let fat = (RESERVED * 512) as usize;
        disk[fat..fat + 4].copy_from_slice(&0x0fff_fff8u32.to_le_bytes());
        disk[fat + 4..fat + 8].copy_from_slice(&0x0fff_ffffu32.to_le_bytes());
        for cluster in 2..CLUSTERS + 2 {
            let at = fat + cluster as usize * 4;
            disk[at..at + 4].copy_from_slice(&entry_of(cluster).to_le_bytes());
        }
        let data_start = (RESERVED + fat_sectors) * 512;
        (disk, total_sectors * 512, data_start)
    }

    /// Free clusters between every fourth used one make runs far shorter
    /// than capture unmaps: none is kept, so a fragmented volume cannot
    /// fill memory with runs. A long free stretch across two pieces of the
    /// FAT comes out whole.
    #[test]
    fn short_free_runs_are_dropped_and_a_run_across_pieces_is_whole() {
        let free_stretch = 1_000_000..1_200_000;
        let (disk, len, data_start) = fat32(|cluster| {
            if free_stretch.contains(&cluster) || cluster % 4 != 0 {
                0
            } else {
                0x0fff_ffff
            }
        });
        assert!(free_stretch.contains(&PIECE_ENTRIES));
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
