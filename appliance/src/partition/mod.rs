//! Partition tables: a summary for the manifest, the sector size a disk
//! file's table implies, the plan that moves the backup GPT to the end of a
//! larger target disk, and the validation (with the `gpt` crate) of every
//! table a restore writes. The on-disk offsets live in `mbr.rs` and
//! `gpt.rs`.
//!
//! The parsers read untrusted bytes; every length and offset is checked
//! before it is used.

mod detect;
mod gpt;

/// Real GPT disks for the fuzz harnesses' tests.
#[cfg(test)]
pub(crate) use gpt::tests::{gpt_disk, gpt_disk_with_entries};
mod mbr;

pub use detect::{detect_sector_size, DetectError, SectorSizeEvidence, DETECT_HEAD_LEN};
pub use gpt::{
    parse_header_sector, plan_relocation, validate_gpt, GptError, GptHeader, Relocation,
};

use reliquary_image::{Partition, PartitionScheme, PartitionTable, ReadAt};

/// Reads the partition table of a disk of `disk_sectors` sectors. A disk
/// whose table is missing or does not parse yields `PartitionScheme::None`
/// with the reason, so capture can still proceed on an ISO or a bare disk.
pub fn summarize<S: ReadAt>(
    disk: &S,
    sector_size: u32,
    disk_sectors: u64,
) -> (PartitionTable, Option<String>) {
    let mut sector0 = vec![0u8; sector_size as usize];
    if disk_sectors == 0 || disk.read_exact_at(&mut sector0, 0).is_err() {
        return (
            none(),
            Some("no partition table recorded: the first sector cannot be read".into()),
        );
    }
    let Some(mbr) = mbr::parse(&sector0) else {
        return (
            none(),
            Some("no partition table recorded: no MBR boot signature".into()),
        );
    };
    if mbr.is_protective() {
        return match gpt::read_primary(disk, sector_size, disk_sectors) {
            Ok((header, entries)) => (
                PartitionTable {
                    scheme: PartitionScheme::Gpt {
                        disk_guid: header.disk_guid,
                    },
                    partitions: entries,
                },
                None,
            ),
            Err(e) => (
                none(),
                Some(format!(
                    "no partition table recorded: protective MBR but the GPT is unreadable: {e}"
                )),
            ),
        };
    }
    let mut partitions: Vec<Partition> = mbr
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.type_byte != 0 && e.sector_count != 0)
        .map(|(i, e)| mbr_partition(i as u32 + 1, 0, e))
        .collect();
    let mut note = None;
    if let Some(extended) = mbr.entries.iter().find(|e| mbr::is_extended(e.type_byte)) {
        if let Err(reason) =
            read_logical(disk, sector_size, disk_sectors, extended, &mut partitions)
        {
            note = Some(format!(
                "logical partitions recorded up to a damaged extended-partition chain: {reason}"
            ));
        }
    }
    (
        PartitionTable {
            scheme: PartitionScheme::Mbr {
                disk_signature: mbr.disk_signature,
            },
            partitions,
        },
        note,
    )
}

/// The most logical partitions read from one extended partition; the
/// chain is a linked list on disk, so a hostile one could loop forever.
const MAX_LOGICAL: u32 = 128;

/// Follows the chain of extended boot records inside `extended`, adding the
/// logical partitions as numbers 5, 6, … as the kernel names them.
fn read_logical<S: ReadAt>(
    disk: &S,
    sector_size: u32,
    disk_sectors: u64,
    extended: &mbr::MbrEntry,
    partitions: &mut Vec<Partition>,
) -> Result<(), String> {
    let base = u64::from(extended.start_sector);
    let mut ebr = base;
    let mut sector = vec![0u8; sector_size as usize];
    for number in 5..5 + MAX_LOGICAL {
        if ebr >= disk_sectors {
            return Err(format!("an EBR at sector {ebr} lies beyond the disk"));
        }
        disk.read_exact_at(&mut sector, ebr * u64::from(sector_size))
            .map_err(|e| format!("the EBR at sector {ebr} cannot be read: {e}"))?;
        let table = mbr::parse(&sector)
            .ok_or_else(|| format!("the EBR at sector {ebr} has no boot signature"))?;
        let [logical, next, ..] = table.entries;
        if logical.type_byte != 0 && logical.sector_count != 0 {
            partitions.push(mbr_partition(number, ebr, &logical));
        }
        if next.type_byte == 0 || next.start_sector == 0 {
            return Ok(());
        }
        // Links are relative to the extended partition and must move forward.
        let following = base + u64::from(next.start_sector);
        if following <= ebr {
            return Err(format!("the EBR at sector {ebr} links backwards"));
        }
        ebr = following;
    }
    Err(format!("more than {MAX_LOGICAL} logical partitions"))
}

/// A partition from an MBR or EBR entry whose start is relative to `base`.
fn mbr_partition(number: u32, base: u64, e: &mbr::MbrEntry) -> Partition {
    Partition {
        number,
        start_sector: base + u64::from(e.start_sector),
        sector_count: u64::from(e.sector_count),
        type_code: format!("0x{:02x}", e.type_byte),
        name: None,
        bootable: e.bootable,
    }
}

fn none() -> PartitionTable {
    PartitionTable {
        scheme: PartitionScheme::None,
        partitions: Vec::new(),
    }
}

/// Formats a GPT GUID stored mixed-endian on disk in its canonical text form.
pub fn guid_to_string(b: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTOR: usize = 512;

    /// Writes an MBR-style table (sector 0 or an EBR) at `lba`.
    fn table(disk: &mut [u8], lba: u64, entries: &[(u8, u32, u32, bool)]) {
        let at = lba as usize * SECTOR;
        for (i, &(type_byte, start, count, bootable)) in entries.iter().enumerate() {
            let e = at + 446 + 16 * i;
            disk[e] = if bootable { 0x80 } else { 0 };
            disk[e + 4] = type_byte;
            disk[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            disk[e + 12..e + 16].copy_from_slice(&count.to_le_bytes());
        }
        disk[at + 510] = 0x55;
        disk[at + 511] = 0xaa;
    }

    #[test]
    fn windows_layout_with_logical_partitions() {
        let mut disk = vec![0u8; 8192 * SECTOR];
        table(
            &mut disk,
            0,
            &[(0x07, 2048, 1024, true), (0x0f, 4096, 4096, false)],
        );
        // Extended at 4096: a logical at EBR+63, a link to the next EBR.
        table(
            &mut disk,
            4096,
            &[(0x07, 63, 1000, false), (0x05, 2048, 2048, false)],
        );
        table(&mut disk, 6144, &[(0x0b, 63, 500, false)]);
        let (summary, note) = summarize(&disk, 512, 8192);
        assert_eq!(note, None);
        let found: Vec<_> = summary
            .partitions
            .iter()
            .map(|p| {
                (
                    p.number,
                    p.start_sector,
                    p.sector_count,
                    p.type_code.as_str(),
                    p.bootable,
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                (1, 2048, 1024, "0x07", true),
                (2, 4096, 4096, "0x0f", false),
                (5, 4159, 1000, "0x07", false),
                (6, 6207, 500, "0x0b", false),
            ]
        );
    }

    #[test]
    fn a_looping_extended_chain_is_reported_not_followed() {
        let mut disk = vec![0u8; 8192 * SECTOR];
        table(
            &mut disk,
            0,
            &[(0x07, 2048, 1024, true), (0x05, 4096, 4096, false)],
        );
        // The EBR links to itself.
        table(
            &mut disk,
            4096,
            &[(0x07, 63, 100, false), (0x05, 0x7fff_ffff, 1, false)],
        );
        let (summary, note) = summarize(&disk, 512, 8192);
        assert!(note.is_some_and(|n| n.contains("beyond the disk")));
        assert_eq!(summary.partitions.len(), 3);

        table(
            &mut disk,
            4096,
            &[(0x07, 63, 100, false), (0x05, 0, 1, false)],
        );
        let (_, note) = summarize(&disk, 512, 8192);
        assert_eq!(note, None, "a zero link ends the chain");
    }

    #[test]
    fn no_table_and_short_disks_say_why() {
        let (summary, note) = summarize(&vec![0u8; 4096], 512, 8);
        assert_eq!(summary.scheme, PartitionScheme::None);
        assert!(note.is_some_and(|n| n.contains("no MBR boot signature")));
        let (_, note) = summarize(&Vec::new(), 512, 0);
        assert!(note.is_some_and(|n| n.contains("cannot be read")));
    }
}
