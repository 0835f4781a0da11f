//! Which logical sector size a raw disk file was written with, judged from
//! its partition table alone. A file carries no sector size of its own, and
//! a GPT disk captured with the wrong one becomes an image that boots
//! nowhere, so the table decides and a contradiction is refused.

/// Bytes of the disk's start that [`detect_sector_size`] looks at: the MBR
/// and a GPT header at byte 512 or at byte 4096.
pub const DETECT_HEAD_LEN: usize = 4096 + 512;

const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const GPT_MIN_HEADER_LEN: usize = 92;
const PROTECTIVE_TYPE: u8 = 0xee;
const MBR_ENTRIES_OFFSET: usize = 446;
const CANDIDATES: [u32; 2] = [512, 4096];

/// What the partition table says about the sector size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectorSizeEvidence {
    /// A protective MBR and a valid GPT header at LBA 1 for this size.
    Gpt { sector_size: u32 },
    /// A DOS partition table: it does not record the sector size.
    Mbr,
    /// No MBR boot signature: an ISO, a bare file system, or a blank disk.
    NoTable,
}

/// A partition table that does not say which sector size it was written for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    #[error(
        "the disk has a protective MBR but no valid GPT header at byte 512 or 4096, \
         so its sector size cannot be known"
    )]
    ProtectiveWithoutGpt,
    #[error("the disk has valid GPT headers at both byte 512 and byte 4096")]
    Ambiguous,
    #[error(
        "the GPT header at byte {gpt_offset} does not fit a disk of {disk_bytes} bytes \
         with {sector_size}-byte sectors: {reason}"
    )]
    Inconsistent {
        gpt_offset: u32,
        sector_size: u32,
        disk_bytes: u64,
        reason: &'static str,
    },
}

/// Judges the sector size from `head`, the first bytes of a disk of
/// `disk_bytes` bytes (at least [`DETECT_HEAD_LEN`] of them unless the disk
/// is shorter). Pure: it reads nothing else.
pub fn detect_sector_size(head: &[u8], disk_bytes: u64) -> Result<SectorSizeEvidence, DetectError> {
    if head.len() < 512 || head[510] != 0x55 || head[511] != 0xaa {
        return Ok(SectorSizeEvidence::NoTable);
    }
    let protective = (0..4)
        .map(|i| &head[MBR_ENTRIES_OFFSET + 16 * i..MBR_ENTRIES_OFFSET + 16 * (i + 1)])
        .find(|entry| entry[4] == PROTECTIVE_TYPE);
    let Some(protective) = protective else {
        return Ok(SectorSizeEvidence::Mbr);
    };
    let protective_start = le_u32(protective, 8);
    let protective_count = le_u32(protective, 12);

    let mut found = None;
    for sector_size in CANDIDATES {
        let at = sector_size as usize;
        let Some(header) = head.get(at..at + sector_size.min(512) as usize) else {
            continue;
        };
        if !gpt_header_is_valid(header) {
            continue;
        }
        if found.is_some() {
            return Err(DetectError::Ambiguous);
        }
        found = Some(sector_size);
    }
    let Some(sector_size) = found else {
        return Err(DetectError::ProtectiveWithoutGpt);
    };
    let inconsistent = |reason| DetectError::Inconsistent {
        gpt_offset: sector_size,
        sector_size,
        disk_bytes,
        reason,
    };
    let disk_sectors = disk_bytes / u64::from(sector_size);
    let header = &head[sector_size as usize..];
    if le_u64(header, 24) != 1 {
        return Err(inconsistent("the header does not say it sits at LBA 1"));
    }
    let backup_lba = le_u64(header, 32);
    let last_usable = le_u64(header, 48);
    if backup_lba >= disk_sectors || last_usable >= disk_sectors {
        return Err(inconsistent("the header points beyond the end of the disk"));
    }
    // The protective partition covers LBA 1 to the end of the disk, or all
    // that 32 bits can say; counted in other units it would overrun the disk.
    if protective_start != 1
        || (protective_count != u32::MAX && u64::from(protective_count) + 1 > disk_sectors)
    {
        return Err(inconsistent(
            "the protective MBR entry does not cover the disk in these sectors",
        ));
    }
    Ok(SectorSizeEvidence::Gpt { sector_size })
}

/// Signature, header size and header CRC32: enough to tell a real header
/// from stale bytes; `partition` validates the rest when it reads the table.
fn gpt_header_is_valid(sector: &[u8]) -> bool {
    if sector.len() < GPT_MIN_HEADER_LEN || &sector[..8] != GPT_SIGNATURE {
        return false;
    }
    let header_len = le_u32(sector, 12) as usize;
    if !(GPT_MIN_HEADER_LEN..=sector.len()).contains(&header_len) {
        return false;
    }
    let mut raw = sector[..header_len].to_vec();
    let stored_crc = le_u32(&raw, 16);
    raw[16..20].fill(0);
    crc32fast::hash(&raw) == stored_crc
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISK_BYTES: u64 = 64 << 20;

    /// A protective MBR and a GPT header at LBA 1 for `sector_size`.
    fn gpt_head(sector_size: u32) -> Vec<u8> {
        let mut head = vec![0u8; DETECT_HEAD_LEN];
        let sectors = DISK_BYTES / u64::from(sector_size);
        let entry = &mut head[MBR_ENTRIES_OFFSET..MBR_ENTRIES_OFFSET + 16];
        entry[4] = PROTECTIVE_TYPE;
        entry[8..12].copy_from_slice(&1u32.to_le_bytes());
        entry[12..16].copy_from_slice(&((sectors - 1) as u32).to_le_bytes());
        head[510] = 0x55;
        head[511] = 0xaa;
        write_header(&mut head[sector_size as usize..], sectors);
        head
    }

    fn write_header(h: &mut [u8], sectors: u64) {
        h[..8].copy_from_slice(GPT_SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
        h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn a_gpt_header_at_its_lba_1_names_the_sector_size() {
        for size in CANDIDATES {
            assert_eq!(
                detect_sector_size(&gpt_head(size), DISK_BYTES),
                Ok(SectorSizeEvidence::Gpt { sector_size: size })
            );
        }
    }

    #[test]
    fn dos_tables_and_blank_disks_say_nothing() {
        let mut head = vec![0u8; DETECT_HEAD_LEN];
        assert_eq!(
            detect_sector_size(&head, DISK_BYTES),
            Ok(SectorSizeEvidence::NoTable)
        );
        head[MBR_ENTRIES_OFFSET + 4] = 0x07;
        head[510] = 0x55;
        head[511] = 0xaa;
        assert_eq!(
            detect_sector_size(&head, DISK_BYTES),
            Ok(SectorSizeEvidence::Mbr)
        );
        assert_eq!(
            detect_sector_size(&head[..100], DISK_BYTES),
            Ok(SectorSizeEvidence::NoTable)
        );
    }

    #[test]
    fn headers_at_both_offsets_or_neither_cannot_decide() {
        let mut head = gpt_head(512);
        write_header(&mut head[4096..], DISK_BYTES / 4096);
        assert_eq!(
            detect_sector_size(&head, DISK_BYTES),
            Err(DetectError::Ambiguous)
        );
        let mut head = gpt_head(4096);
        head[4096 + 16] ^= 1; // CRC no longer matches
        assert_eq!(
            detect_sector_size(&head, DISK_BYTES),
            Err(DetectError::ProtectiveWithoutGpt)
        );
    }

    #[test]
    fn a_protective_entry_counted_in_other_sectors_is_refused() {
        // Written for 512-byte sectors, then found at byte 4096: the entry's
        // count overruns the disk in 4096-byte sectors.
        let mut head = gpt_head(4096);
        let count = (DISK_BYTES / 512 - 1) as u32;
        head[MBR_ENTRIES_OFFSET + 12..MBR_ENTRIES_OFFSET + 16]
            .copy_from_slice(&count.to_le_bytes());
        assert!(matches!(
            detect_sector_size(&head, DISK_BYTES),
            Err(DetectError::Inconsistent { .. })
        ));
        // A backup header beyond a truncated file is refused too.
        assert!(matches!(
            detect_sector_size(&gpt_head(512), DISK_BYTES / 2),
            Err(DetectError::Inconsistent { .. })
        ));
    }
}
