//! The DOS/MBR partition table in sector 0.

use super::le_u32;

pub(super) struct Mbr {
    pub disk_signature: u32,
    pub entries: [MbrEntry; 4],
}

#[derive(Clone, Copy)]
pub(super) struct MbrEntry {
    pub bootable: bool,
    pub type_byte: u8,
    pub start_sector: u32,
    pub sector_count: u32,
}

/// Offset of the first of the four partition entries.
pub(super) const ENTRIES_OFFSET: usize = 446;
pub(super) const ENTRY_LEN: usize = 16;
/// Within an entry: the type byte and the 32-bit sector count.
pub(super) const TYPE_OFFSET: usize = 4;
pub(super) const SECTOR_COUNT_OFFSET: usize = 12;
/// The type byte of a GPT protective partition.
pub(super) const PROTECTIVE_TYPE: u8 = 0xee;

/// Parses sector 0; `None` when it carries no 0x55AA boot signature.
pub(super) fn parse(sector0: &[u8]) -> Option<Mbr> {
    if sector0.len() < 512 || sector0[510] != 0x55 || sector0[511] != 0xaa {
        return None;
    }
    let entry = |i: usize| {
        let e = &sector0[ENTRIES_OFFSET + i * ENTRY_LEN..ENTRIES_OFFSET + (i + 1) * ENTRY_LEN];
        MbrEntry {
            bootable: e[0] == 0x80,
            type_byte: e[TYPE_OFFSET],
            start_sector: le_u32(e, 8),
            sector_count: le_u32(e, SECTOR_COUNT_OFFSET),
        }
    };
    Some(Mbr {
        disk_signature: le_u32(sector0, 440),
        entries: [entry(0), entry(1), entry(2), entry(3)],
    })
}

/// DOS, Windows (LBA) and Linux extended-partition type bytes.
pub(super) fn is_extended(type_byte: u8) -> bool {
    matches!(type_byte, 0x05 | 0x0f | 0x85)
}

impl Mbr {
    pub(super) fn is_protective(&self) -> bool {
        self.entries.iter().any(|e| e.type_byte == PROTECTIVE_TYPE)
    }
}
