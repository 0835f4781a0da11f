//! Partition tables: a summary for the manifest, and the fix-up that moves
//! the backup GPT to the end of a larger target disk.
//!
//! The parsers read untrusted bytes; every length and offset is checked
//! before it is used.

mod gpt;
mod mbr;

pub use gpt::{check_relocated, relocate_backup_gpt, GptError, GptHeader};

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
        return (none(), Some("the first sector cannot be read".into()));
    }
    let Some(mbr) = mbr::parse(&sector0) else {
        return (none(), Some("no MBR boot signature".into()));
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
                Some(format!("protective MBR but the GPT is unreadable: {e}")),
            ),
        };
    }
    let partitions: Vec<Partition> = mbr
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.type_byte != 0 && e.sector_count != 0)
        .map(|(i, e)| Partition {
            number: i as u32 + 1,
            start_sector: u64::from(e.start_sector),
            sector_count: u64::from(e.sector_count),
            type_code: format!("0x{:02x}", e.type_byte),
            name: None,
            bootable: e.bootable,
        })
        .collect();
    (
        PartitionTable {
            scheme: PartitionScheme::Mbr {
                disk_signature: mbr.disk_signature,
            },
            partitions,
        },
        None,
    )
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
