//! The GUID partition table: reading the primary header and entries, and
//! moving the backup to the last sectors of a larger disk.

use std::fs::File;
use std::os::unix::fs::FileExt;

use reliquary_image::{Partition, ReadAt};

use super::{guid_to_string, le_u32, le_u64, mbr};

const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_LEN: usize = 92;
/// Upper bound on the entry array we read (the usual size is 16 KiB).
const MAX_ENTRIES_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("cannot read the GPT at byte {offset}: {source}")]
    Read { offset: u64, source: std::io::Error },
    #[error("cannot write the GPT at byte {offset}: {source}")]
    Write { offset: u64, source: std::io::Error },
    #[error("the primary GPT header is invalid: {0}")]
    InvalidHeader(&'static str),
    #[error("the GPT partition entries fail their CRC32")]
    EntriesCrc,
    #[error("the target has {target} sectors, fewer than the GPT's {needed}")]
    TargetTooSmall { target: u64, needed: u64 },
}

/// The fields of a GPT header this code uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptHeader {
    pub current_lba: u64,
    pub backup_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: [u8; 16],
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
}

impl GptHeader {
    /// Sectors the partition entry array occupies.
    pub fn entries_sectors(&self, sector_size: u32) -> u64 {
        self.entries_bytes().div_ceil(u64::from(sector_size))
    }

    fn entries_bytes(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }
}

/// Parses and checks a header sector (signature, size, CRC, sane fields).
fn parse_header(sector: &[u8], disk_sectors: u64) -> Result<(GptHeader, Vec<u8>), GptError> {
    if sector.len() < HEADER_LEN || &sector[0..8] != SIGNATURE {
        return Err(GptError::InvalidHeader("no `EFI PART` signature"));
    }
    let header_size = le_u32(sector, 12) as usize;
    if !(HEADER_LEN..=sector.len()).contains(&header_size) {
        return Err(GptError::InvalidHeader("header size out of range"));
    }
    let mut raw = sector[..header_size].to_vec();
    let stored_crc = le_u32(&raw, 16);
    raw[16..20].fill(0);
    if crc32fast::hash(&raw) != stored_crc {
        return Err(GptError::InvalidHeader("header CRC32 mismatch"));
    }
    raw[16..20].copy_from_slice(&stored_crc.to_le_bytes());
    let h = GptHeader {
        current_lba: le_u64(sector, 24),
        backup_lba: le_u64(sector, 32),
        first_usable: le_u64(sector, 40),
        last_usable: le_u64(sector, 48),
        disk_guid: sector[56..72].try_into().unwrap_or([0; 16]),
        entries_lba: le_u64(sector, 72),
        entry_count: le_u32(sector, 80),
        entry_size: le_u32(sector, 84),
    };
    if h.entry_size < 128 || h.entry_size % 8 != 0 || h.entries_bytes() > MAX_ENTRIES_BYTES {
        return Err(GptError::InvalidHeader("entry size or count out of range"));
    }
    if h.entries_lba >= disk_sectors
        || h.first_usable > h.last_usable
        || h.last_usable >= disk_sectors
    {
        return Err(GptError::InvalidHeader("LBA fields outside the disk"));
    }
    Ok((h, raw))
}

fn read_entries<S: ReadAt>(
    disk: &S,
    h: &GptHeader,
    sector_size: u32,
    entries_crc: u32,
) -> Result<Vec<u8>, GptError> {
    let offset = h.entries_lba * u64::from(sector_size);
    let mut entries = vec![0u8; h.entries_bytes() as usize];
    disk.read_exact_at(&mut entries, offset)
        .map_err(|source| GptError::Read { offset, source })?;
    if crc32fast::hash(&entries) != entries_crc {
        return Err(GptError::EntriesCrc);
    }
    Ok(entries)
}

fn read_header_sector<S: ReadAt>(disk: &S, sector_size: u32) -> Result<Vec<u8>, GptError> {
    let offset = u64::from(sector_size);
    let mut sector = vec![0u8; sector_size as usize];
    disk.read_exact_at(&mut sector, offset)
        .map_err(|source| GptError::Read { offset, source })?;
    Ok(sector)
}

/// Reads the primary header at LBA 1 and summarises the used entries.
pub(super) fn read_primary<S: ReadAt>(
    disk: &S,
    sector_size: u32,
    disk_sectors: u64,
) -> Result<(GptHeader, Vec<Partition>), GptError> {
    let sector = read_header_sector(disk, sector_size)?;
    let (h, _) = parse_header(&sector, disk_sectors)?;
    let entries = read_entries(disk, &h, sector_size, le_u32(&sector, 88))?;
    let mut partitions = Vec::new();
    for (i, e) in entries.chunks_exact(h.entry_size as usize).enumerate() {
        let type_guid: [u8; 16] = e[0..16].try_into().unwrap_or([0; 16]);
        if type_guid == [0; 16] {
            continue;
        }
        let (first, last) = (le_u64(e, 32), le_u64(e, 40));
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = String::from_utf16_lossy(&units);
        partitions.push(Partition {
            number: i as u32 + 1,
            start_sector: first,
            sector_count: last.saturating_sub(first).saturating_add(1),
            type_code: guid_to_string(&type_guid),
            name: (!name.is_empty()).then_some(name),
            // Attribute bit 2: legacy BIOS bootable.
            bootable: le_u64(e, 48) & 4 != 0,
        });
    }
    Ok((h, partitions))
}

/// Checks a disk whose backup GPT [`relocate_backup_gpt`] moved: both
/// headers and both entry arrays are valid, the backup sits at the last
/// sector, and the two point at each other. Returns the primary header.
pub fn check_relocated<S: ReadAt>(
    disk: &S,
    sector_size: u32,
    disk_sectors: u64,
) -> Result<GptHeader, GptError> {
    let primary_sector = read_header_sector(disk, sector_size)?;
    let (primary, _) = parse_header(&primary_sector, disk_sectors)?;
    read_entries(disk, &primary, sector_size, le_u32(&primary_sector, 88))?;
    let last = disk_sectors - 1;
    let offset = last * u64::from(sector_size);
    let mut backup_sector = vec![0u8; sector_size as usize];
    disk.read_exact_at(&mut backup_sector, offset)
        .map_err(|source| GptError::Read { offset, source })?;
    let (backup, _) = parse_header(&backup_sector, disk_sectors)?;
    read_entries(disk, &backup, sector_size, le_u32(&backup_sector, 88))?;
    if primary.current_lba != 1
        || primary.backup_lba != last
        || backup.current_lba != last
        || backup.backup_lba != 1
    {
        return Err(GptError::InvalidHeader(
            "the primary and backup headers do not point at each other and the disk's end",
        ));
    }
    Ok(primary)
}

/// After a GPT image of `image_sectors` was written to a disk of
/// `target_sectors`, moves the backup entries and header to the last
/// sectors, extends the last usable LBA, and grows the protective MBR.
/// Returns false when nothing needed doing (same size, or not GPT).
pub fn relocate_backup_gpt(
    disk: &File,
    sector_size: u32,
    image_sectors: u64,
    target_sectors: u64,
) -> Result<bool, GptError> {
    if target_sectors <= image_sectors {
        return Ok(false);
    }
    let ss = u64::from(sector_size);
    let mut sector0 = vec![0u8; sector_size as usize];
    FileExt::read_exact_at(disk, &mut sector0, 0)
        .map_err(|source| GptError::Read { offset: 0, source })?;
    let Some(mbr) = mbr::parse(&sector0) else {
        return Ok(false);
    };
    if !mbr.is_protective() {
        return Ok(false);
    }
    let primary = read_header_sector(disk, sector_size)?;
    let (h, mut header) = parse_header(&primary, image_sectors)?;
    let entries = read_entries(disk, &h, sector_size, le_u32(&primary, 88))?;
    let entries_sectors = h.entries_bytes().div_ceil(ss);
    let last_lba = target_sectors - 1;
    let needed = entries_sectors + 2 + h.first_usable;
    if target_sectors < needed {
        return Err(GptError::TargetTooSmall {
            target: target_sectors,
            needed,
        });
    }
    let backup_entries_lba = last_lba - entries_sectors;
    let last_usable = backup_entries_lba - 1;

    let write = |bytes: &[u8], lba: u64| {
        let offset = lba * ss;
        disk.write_all_at(bytes, offset)
            .map_err(|source| GptError::Write { offset, source })
    };
    // The stale backup at the image's end would otherwise be found by tools.
    let old_backup_start = image_sectors
        .checked_sub(entries_sectors + 1)
        .ok_or(GptError::InvalidHeader("the image is smaller than its GPT"))?;
    write(
        &vec![0u8; ((entries_sectors + 1) * ss) as usize],
        old_backup_start,
    )?;

    write(&entries, backup_entries_lba)?;
    let mut backup = header.clone();
    set_header_fields(&mut backup, last_lba, 1, last_usable, backup_entries_lba);
    write(&padded(&backup, sector_size), last_lba)?;
    set_header_fields(&mut header, 1, last_lba, last_usable, h.entries_lba);
    write(&padded(&header, sector_size), 1)?;

    let protective_len = u32::try_from(last_lba).unwrap_or(u32::MAX);
    for i in 0..4 {
        let at = mbr::ENTRIES_OFFSET + i * 16;
        if sector0[at + 4] == mbr::PROTECTIVE_TYPE {
            sector0[at + 12..at + 16].copy_from_slice(&protective_len.to_le_bytes());
        }
    }
    write(&sector0, 0)?;
    disk.sync_all()
        .map_err(|source| GptError::Write { offset: 0, source })?;
    Ok(true)
}

fn set_header_fields(
    header: &mut [u8],
    current: u64,
    backup: u64,
    last_usable: u64,
    entries_lba: u64,
) {
    header[24..32].copy_from_slice(&current.to_le_bytes());
    header[32..40].copy_from_slice(&backup.to_le_bytes());
    header[48..56].copy_from_slice(&last_usable.to_le_bytes());
    header[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    header[16..20].fill(0);
    let crc = crc32fast::hash(header);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
}

fn padded(header: &[u8], sector_size: u32) -> Vec<u8> {
    let mut sector = vec![0u8; sector_size as usize];
    sector[..header.len()].copy_from_slice(header);
    sector
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTOR: u32 = 512;

    /// A minimal GPT disk image of `sectors` sectors with one partition.
    fn gpt_disk(sectors: u64) -> Vec<u8> {
        let ss = SECTOR as usize;
        let mut disk = vec![0u8; sectors as usize * ss];
        // Protective MBR.
        disk[446 + 4] = mbr::PROTECTIVE_TYPE;
        disk[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        disk[446 + 12..446 + 16].copy_from_slice(&((sectors - 1) as u32).to_le_bytes());
        disk[510] = 0x55;
        disk[511] = 0xaa;
        let mut entries = vec![0u8; 128 * 128];
        entries[0] = 0xaf; // any non-zero type GUID
        entries[32..40].copy_from_slice(&2048u64.to_le_bytes());
        entries[40..48].copy_from_slice(&4095u64.to_le_bytes());
        for (i, unit) in "DATA".encode_utf16().enumerate() {
            entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
        let entries_sectors = (entries.len() / ss) as u64;
        let mut header = vec![0u8; HEADER_LEN];
        header[0..8].copy_from_slice(SIGNATURE);
        header[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        header[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        header[40..48].copy_from_slice(&34u64.to_le_bytes());
        header[80..84].copy_from_slice(&128u32.to_le_bytes());
        header[84..88].copy_from_slice(&128u32.to_le_bytes());
        header[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
        let last = sectors - 1;
        let mut backup = header.clone();
        set_header_fields(&mut header, 1, last, last - entries_sectors - 1, 2);
        set_header_fields(
            &mut backup,
            last,
            1,
            last - entries_sectors - 1,
            last - entries_sectors,
        );
        disk[ss..ss + HEADER_LEN].copy_from_slice(&header);
        disk[2 * ss..2 * ss + entries.len()].copy_from_slice(&entries);
        let backup_entries = (last - entries_sectors) as usize * ss;
        disk[backup_entries..backup_entries + entries.len()].copy_from_slice(&entries);
        disk[last as usize * ss..last as usize * ss + HEADER_LEN].copy_from_slice(&backup);
        disk
    }

    #[test]
    fn reads_the_primary_table() {
        let disk = gpt_disk(8192);
        let (header, partitions) = read_primary(&disk, SECTOR, 8192).unwrap();
        assert_eq!(header.backup_lba, 8191);
        assert_eq!(partitions.len(), 1);
        assert_eq!(partitions[0].start_sector, 2048);
        assert_eq!(partitions[0].sector_count, 2048);
        assert_eq!(partitions[0].name.as_deref(), Some("DATA"));
    }

    #[test]
    fn relocates_the_backup_to_the_end_of_a_larger_disk() {
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(&gpt_disk(8192), 0).unwrap();
        file.set_len(16384 * u64::from(SECTOR)).unwrap();
        assert!(relocate_backup_gpt(&file, SECTOR, 8192, 16384).unwrap());

        let mut disk = vec![0u8; 16384 * SECTOR as usize];
        FileExt::read_exact_at(&file, &mut disk, 0).unwrap();
        let (primary, _) = read_primary(&disk, SECTOR, 16384).unwrap();
        assert_eq!(primary.backup_lba, 16383);
        assert_eq!(primary.last_usable, 16383 - 32 - 1);
        let last = &disk[16383 * SECTOR as usize..];
        let (backup, _) = parse_header(last, 16384).unwrap();
        assert_eq!((backup.current_lba, backup.backup_lba), (16383, 1));
        assert_eq!(backup.entries_lba, 16383 - 32);
        let protective_len = u32::from_le_bytes(disk[446 + 12..446 + 16].try_into().unwrap());
        assert_eq!(protective_len, 16383);
        // The stale backup at the old end is gone.
        assert!(disk[8191 * SECTOR as usize..8192 * SECTOR as usize]
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn same_size_and_mbr_disks_are_left_alone() {
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(&gpt_disk(8192), 0).unwrap();
        assert!(!relocate_backup_gpt(&file, SECTOR, 8192, 8192).unwrap());
        let mbr_only = tempfile::tempfile().unwrap();
        let mut sector0 = vec![0u8; 512];
        sector0[510] = 0x55;
        sector0[511] = 0xaa;
        sector0[446 + 4] = 0x07;
        mbr_only.write_all_at(&sector0, 0).unwrap();
        mbr_only.set_len(16384 * 512).unwrap();
        assert!(!relocate_backup_gpt(&mbr_only, SECTOR, 8192, 16384).unwrap());
    }

    #[test]
    fn corrupt_headers_are_rejected_without_panics() {
        let mut disk = gpt_disk(8192);
        disk[512 + 30] ^= 1; // inside the CRC-covered header
        assert!(matches!(
            read_primary(&disk, SECTOR, 8192),
            Err(GptError::InvalidHeader(_))
        ));
        let mut disk = gpt_disk(8192);
        disk[2 * 512 + 40] ^= 1; // inside the entries
        assert!(matches!(
            read_primary(&disk, SECTOR, 8192),
            Err(GptError::EntriesCrc)
        ));
        for len in [0usize, 10, 100, 600] {
            let _ = read_primary(&disk[..len.min(disk.len())].to_vec(), SECTOR, 8192);
        }
    }
}
