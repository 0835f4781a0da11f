//! The GUID partition table: reading the primary header and entries, and
//! moving the backup to the last sectors of a larger disk.

use reliquary_image::{Partition, ReadAt};

use super::{guid_to_string, le_u32, le_u64, mbr};

const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_LEN: usize = 92;
/// Upper bound on the entry array we read (the usual size is 16 KiB).
const MAX_ENTRIES_BYTES: u64 = 1 << 20;
/// The only entry size the `gpt` crate reads without panicking.
const CRATE_ENTRY_SIZE: u32 = 128;

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
    #[error("the gpt crate rejects the table: {0}")]
    Crate(String),
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
    // UEFI: the entry size is 128 × 2^n bytes.
    if h.entry_size < 128
        || !h.entry_size.is_power_of_two()
        || h.entries_bytes() > MAX_ENTRIES_BYTES
    {
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
/// Hand-written rather than through the `gpt` crate, which sizes its entry
/// array from the untrusted header unchecked; [`validate_gpt`] has the
/// crate read every table a restore writes.
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

/// Validates the GPT of a disk of `disk_sectors` sectors: both headers and
/// both entry arrays are valid, the backup sits at the last sector, the two
/// point at each other and describe the same table, and, for the usual
/// 128-byte entries, the `gpt` crate reads the same table. Returns the
/// primary header.
///
/// The headers are bounded and the entry arrays' CRCs checked here first:
/// the crate allocates the entry array from the header's sizes unchecked,
/// and does not check the entries' CRC. Larger entries (legal in UEFI) are
/// validated here alone: the crate asserts (panics) that entries are 128
/// bytes.
pub fn validate_gpt<S: ReadAt>(
    disk: &S,
    sector_size: u32,
    disk_sectors: u64,
) -> Result<GptHeader, GptError> {
    let primary_sector = read_header_sector(disk, sector_size)?;
    let (primary, _) = parse_header(&primary_sector, disk_sectors)?;
    read_entries(disk, &primary, sector_size, le_u32(&primary_sector, 88))?;
    let last = disk_sectors
        .checked_sub(1)
        .ok_or(GptError::InvalidHeader("the disk is empty"))?;
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
    let same_table = primary.first_usable == backup.first_usable
        && primary.last_usable == backup.last_usable
        && primary.disk_guid == backup.disk_guid
        && primary.entry_count == backup.entry_count
        && primary.entry_size == backup.entry_size
        && le_u32(&primary_sector, 88) == le_u32(&backup_sector, 88);
    if !same_table {
        return Err(GptError::InvalidHeader(
            "the primary and backup headers describe different tables",
        ));
    }
    if primary.entry_size == CRATE_ENTRY_SIZE {
        check_with_gpt_crate(disk, sector_size, disk_sectors, &primary)?;
    }
    Ok(primary)
}

/// Reads the table again with the `gpt` crate, which must find both
/// headers valid and agree with this module on what they say.
fn check_with_gpt_crate<S: ReadAt>(
    disk: &S,
    sector_size: u32,
    disk_sectors: u64,
    primary: &GptHeader,
) -> Result<(), GptError> {
    let block_size = match sector_size {
        512 => ::gpt::disk::LogicalBlockSize::Lb512,
        4096 => ::gpt::disk::LogicalBlockSize::Lb4096,
        _ => {
            return Err(GptError::InvalidHeader(
                "sector size is neither 512 nor 4096",
            ))
        }
    };
    let device = ReadAtCursor {
        disk,
        len: disk_sectors * u64::from(sector_size),
        pos: 0,
    };
    let table = ::gpt::GptConfig::new()
        .writable(false)
        .only_valid_headers(true)
        .logical_block_size(block_size)
        .open_from_device(device)
        .map_err(|e| GptError::Crate(e.to_string()))?;
    let (h1, h2) = (
        table
            .primary_header()
            .map_err(|e| GptError::Crate(e.to_string()))?,
        table
            .backup_header()
            .map_err(|e| GptError::Crate(e.to_string()))?,
    );
    let agrees = h1.backup_lba == primary.backup_lba
        && h2.current_lba == primary.backup_lba
        && h1.last_usable == primary.last_usable
        && h1.part_start == primary.entries_lba
        && h1.num_parts == primary.entry_count
        && h2.num_parts == primary.entry_count
        && h1.disk_guid == h2.disk_guid;
    if !agrees {
        return Err(GptError::Crate(
            "the gpt crate reads different headers".into(),
        ));
    }
    Ok(())
}

/// `Read + Seek` over a [`ReadAt`] of known length, for the `gpt` crate.
struct ReadAtCursor<'a, S> {
    disk: &'a S,
    len: u64,
    pos: u64,
}

impl<S> std::fmt::Debug for ReadAtCursor<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAtCursor")
            .field("len", &self.len)
            .field("pos", &self.pos)
            .finish()
    }
}

impl<S: ReadAt> std::io::Read for ReadAtCursor<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        self.disk.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<S> std::io::Seek for ReadAtCursor<'_, S> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(at) => Some(at),
            std::io::SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            std::io::SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        self.pos = target.ok_or(std::io::ErrorKind::InvalidInput)?;
        Ok(self.pos)
    }
}

impl<S> std::io::Write for ReadAtCursor<'_, S> {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a GPT image restored onto a larger disk needs so that its table
/// describes the whole disk. Computed in memory, from the image's own
/// bytes; nothing here touches a disk.
///
/// Hand-written because the `gpt` crate's writer rebuilds the headers and
/// compacts the entry array, and the table must stay byte for byte the
/// signed one except for the fields a move changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocation {
    /// Sector 0 with the protective partition grown to the disk's end.
    pub sector0: Vec<u8>,
    /// LBA 1 with the backup LBA, last usable LBA and CRC rewritten.
    pub primary_header: Vec<u8>,
    /// The entry array, unchanged, for the end of the disk.
    pub entries: Vec<u8>,
    pub backup_entries_lba: u64,
    /// The backup header for the disk's last sector.
    pub backup_header: Vec<u8>,
    pub backup_header_lba: u64,
    /// The image's old backup (entries and header), zeroed on the target
    /// so that no tool finds a stale table mid-disk.
    pub old_backup: std::ops::Range<u64>,
}

/// Parses and checks a GPT header sector (the primary at LBA 1 or the
/// backup at the last LBA of a disk of `disk_sectors`): what
/// [`plan_relocation`] needs to find the entries.
pub fn parse_header_sector(header_sector: &[u8], disk_sectors: u64) -> Result<GptHeader, GptError> {
    parse_header(header_sector, disk_sectors).map(|(h, _)| h)
}

/// Plans the move of the backup GPT of an image of `image_sectors` to the
/// end of a disk of `target_sectors`. `None` when there is nothing to do:
/// the disk is not larger, or sector 0 is not a protective MBR.
pub fn plan_relocation(
    sector0: &[u8],
    header_sector: &[u8],
    entries: &[u8],
    sector_size: u32,
    image_sectors: u64,
    target_sectors: u64,
) -> Result<Option<Relocation>, GptError> {
    if target_sectors <= image_sectors {
        return Ok(None);
    }
    if !mbr::parse(sector0).is_some_and(|m| m.is_protective()) {
        return Ok(None);
    }
    let (h, mut header) = parse_header(header_sector, image_sectors)?;
    if entries.len() as u64 != h.entries_bytes()
        || crc32fast::hash(entries) != le_u32(header_sector, 88)
    {
        return Err(GptError::EntriesCrc);
    }
    let entries_sectors = h.entries_sectors(sector_size);
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
    let old_backup_start = image_sectors
        .checked_sub(entries_sectors + 1)
        .ok_or(GptError::InvalidHeader("the image is smaller than its GPT"))?;

    let mut backup = header.clone();
    set_header_fields(&mut backup, last_lba, 1, last_usable, backup_entries_lba);
    set_header_fields(&mut header, 1, last_lba, last_usable, h.entries_lba);
    let mut sector0 = sector0.to_vec();
    let protective_len = u32::try_from(last_lba).unwrap_or(u32::MAX);
    for i in 0..4 {
        let at = mbr::ENTRIES_OFFSET + i * mbr::ENTRY_LEN;
        if sector0[at + mbr::TYPE_OFFSET] == mbr::PROTECTIVE_TYPE {
            sector0[at + mbr::SECTOR_COUNT_OFFSET..at + mbr::SECTOR_COUNT_OFFSET + 4]
                .copy_from_slice(&protective_len.to_le_bytes());
        }
    }
    let mut entries_padded = entries.to_vec();
    entries_padded.resize((entries_sectors * u64::from(sector_size)) as usize, 0);
    Ok(Some(Relocation {
        sector0,
        primary_header: padded(&header, sector_size),
        entries: entries_padded,
        backup_entries_lba,
        backup_header: padded(&backup, sector_size),
        backup_header_lba: last_lba,
        old_backup: old_backup_start..image_sectors,
    }))
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
pub(crate) mod tests {
    use super::*;

    const SECTOR: u32 = 512;

    /// A minimal GPT disk image of `sectors` sectors with one partition.
    pub(crate) fn gpt_disk(sectors: u64) -> Vec<u8> {
        gpt_disk_with_entries(sectors, 128)
    }

    /// [`gpt_disk`] with 128 entries of `entry_size` bytes.
    pub(crate) fn gpt_disk_with_entries(sectors: u64, entry_size: u32) -> Vec<u8> {
        let ss = SECTOR as usize;
        let mut disk = vec![0u8; sectors as usize * ss];
        // Protective MBR.
        disk[446 + 4] = mbr::PROTECTIVE_TYPE;
        disk[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        disk[446 + 12..446 + 16].copy_from_slice(&((sectors - 1) as u32).to_le_bytes());
        disk[510] = 0x55;
        disk[511] = 0xaa;
        let mut entries = vec![0u8; 128 * entry_size as usize];
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
        header[40..48].copy_from_slice(&(2 + entries_sectors).to_le_bytes());
        header[80..84].copy_from_slice(&128u32.to_le_bytes());
        header[84..88].copy_from_slice(&entry_size.to_le_bytes());
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

    /// Applies a relocation to a copy of `disk` grown to `target` sectors.
    fn relocated(disk: &[u8], target: u64) -> Option<Vec<u8>> {
        let ss = SECTOR as usize;
        let (h, _) = parse_header(&disk[ss..2 * ss], 8192).unwrap();
        let entries_at = h.entries_lba as usize * ss;
        let entries = &disk[entries_at..entries_at + h.entries_bytes() as usize];
        let plan = plan_relocation(
            &disk[..ss],
            &disk[ss..2 * ss],
            entries,
            SECTOR,
            8192,
            target,
        )
        .unwrap()?;
        let mut out = disk.to_vec();
        out.resize(target as usize * ss, 0);
        let mut put = |lba: u64, bytes: &[u8]| {
            out[lba as usize * ss..lba as usize * ss + bytes.len()].copy_from_slice(bytes)
        };
        put(0, &plan.sector0);
        put(1, &plan.primary_header);
        let zeros = vec![0u8; (plan.old_backup.end - plan.old_backup.start) as usize * ss];
        put(plan.old_backup.start, &zeros);
        put(plan.backup_entries_lba, &plan.entries);
        put(plan.backup_header_lba, &plan.backup_header);
        Some(out)
    }

    #[test]
    fn a_table_of_256_byte_entries_validates_without_the_crate_panicking() {
        let disk = gpt_disk_with_entries(8192, 256);
        let primary = validate_gpt(&disk, SECTOR, 8192).unwrap();
        assert_eq!((primary.entry_size, primary.entry_count), (256, 128));
        let (_, partitions) = read_primary(&disk, SECTOR, 8192).unwrap();
        assert_eq!(partitions[0].name.as_deref(), Some("DATA"));
        let moved = relocated(&disk, 16384).unwrap();
        assert_eq!(
            validate_gpt(&moved, SECTOR, 16384).unwrap().backup_lba,
            16383
        );
        // Damage is still found without the crate.
        let mut damaged = disk.clone();
        damaged[(8192 - 2) * SECTOR as usize] ^= 1; // the backup entries
        assert!(matches!(
            validate_gpt(&damaged, SECTOR, 8192),
            Err(GptError::EntriesCrc)
        ));
    }

    #[test]
    fn entry_sizes_other_than_128_times_a_power_of_two_are_refused() {
        for size in [64u32, 136, 384] {
            let disk = gpt_disk_with_entries(8192, size);
            assert!(
                matches!(
                    read_primary(&disk, SECTOR, 8192),
                    Err(GptError::InvalidHeader(_))
                ),
                "{size}"
            );
        }
    }

    #[test]
    fn headers_describing_different_tables_do_not_validate() {
        let mut disk = gpt_disk(8192);
        let last = 8191 * SECTOR as usize;
        let mut backup = disk[last..last + HEADER_LEN].to_vec();
        backup[40..48].copy_from_slice(&40u64.to_le_bytes()); // first usable
        set_header_fields(&mut backup, 8191, 1, 8191 - 32 - 1, 8191 - 32);
        disk[last..last + HEADER_LEN].copy_from_slice(&backup);
        assert!(matches!(
            validate_gpt(&disk, SECTOR, 8192),
            Err(GptError::InvalidHeader(m)) if m.contains("different tables")
        ));
    }

    #[test]
    fn relocates_the_backup_to_the_end_of_a_larger_disk() {
        let disk = relocated(&gpt_disk(8192), 16384).unwrap();
        let primary = validate_gpt(&disk, SECTOR, 16384).unwrap();
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
    fn same_size_and_mbr_disks_need_no_relocation() {
        assert!(relocated(&gpt_disk(8192), 8192).is_none());
        let mut mbr_only = gpt_disk(8192);
        mbr_only[446 + 4] = 0x07;
        assert!(relocated(&mbr_only, 16384).is_none());
    }

    #[test]
    fn validation_refuses_a_backup_left_mid_disk() {
        let mut disk = gpt_disk(8192);
        disk.resize(16384 * SECTOR as usize, 0);
        assert!(validate_gpt(&disk, SECTOR, 16384).is_err());
        assert!(validate_gpt(&gpt_disk(8192), SECTOR, 8192).is_ok());
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
