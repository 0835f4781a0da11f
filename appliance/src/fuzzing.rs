//! Entry points for the fuzz targets in `fuzz/` that cover the appliance's
//! parsers of untrusted bytes: audit logs, checkpoints, mount tables,
//! partition tables, the sector-size detection, the file-system
//! allocation maps and the operators list. Each must return without panicking or allocating
//! without bound, whatever the input.

use std::io::Cursor;

use reliquary_image::keys::PublicKey;

use crate::audit::{verify_bytes, Checkpoint};
use crate::operators::OperatorList;

/// The Ed25519 base point: a valid key that signed nothing in the input.
const SOME_KEY: [u8; 32] = [
    0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
    0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
];

/// Scans and verifies arbitrary bytes as an audit log.
pub fn audit_log(data: &[u8]) {
    if let Ok(key) = PublicKey::from_bytes(SOME_KEY) {
        let _ = verify_bytes(data, &key, None);
    }
}

/// Parses arbitrary bytes as an operators file. Nothing is hashed: the
/// parser only looks at a line's Argon2 parameters, whatever they claim. A
/// list it accepts must read back unchanged from its own text.
pub fn operators(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new(crate::operators::OPERATORS_FILE);
    if let Ok(list) = OperatorList::parse(text, path) {
        let again = OperatorList::parse(&list.to_text(), path);
        assert_eq!(
            again.ok(),
            Some(list),
            "the list changed through its own text"
        );
    }
}

/// Parses arbitrary text as a signed checkpoint note.
pub fn checkpoint(data: &[u8]) {
    if let (Ok(text), Ok(key)) = (std::str::from_utf8(data), PublicKey::from_bytes(SOME_KEY)) {
        let _ = Checkpoint::parse_verified(text, &key);
    }
}

/// Parses arbitrary bytes as `/proc/self/mountinfo`.
pub fn mountinfo(data: &[u8]) {
    let _ = crate::discover::parse_mountinfo(Cursor::new(data));
}

/// Summarises arbitrary bytes as a disk's partition table, in 512- and
/// 4096-byte sectors.
pub fn partition_table(data: &[u8]) {
    for sector in [512u32, 4096] {
        let sectors = data.len() as u64 / u64::from(sector);
        let _ = crate::partition::summarize(&data, sector, sectors);
        // What a restore runs on every GPT it writes, the `gpt` crate
        // included (its assert on 128-byte entries once panicked here),
        // and the plan that moves the backup to a larger disk.
        let _ = crate::partition::validate_gpt(&data, sector, sectors);
        let ss = sector as usize;
        if let Ok(header) = data
            .get(ss..2 * ss)
            .ok_or(())
            .and_then(|h| crate::partition::parse_header_sector(h, sectors).map_err(|_| ()))
        {
            let at = header.entries_lba as usize * ss;
            let len = header.entry_count as usize * header.entry_size as usize;
            if let Some(entries) = data.get(at..at.saturating_add(len)) {
                let _ = crate::partition::plan_relocation(
                    &data[..ss],
                    &data[ss..2 * ss],
                    entries,
                    sector,
                    sectors,
                    sectors.saturating_mul(2),
                );
            }
        }
    }
}

/// Reads arbitrary bytes as a partition holding an ext2/3/4 file system.
pub fn ext_bitmaps(data: &[u8]) {
    crate::fsmap::fuzz_free_space(data, reliquary_image::FileSystemKind::Ext4);
}

/// Reads arbitrary bytes as a partition holding a FAT file system.
pub fn fat_table(data: &[u8]) {
    crate::fsmap::fuzz_free_space(data, reliquary_image::FileSystemKind::Fat32);
}

/// Reads arbitrary bytes as a partition holding NTFS (through the `ntfs`
/// crate, which capture trusts with untrusted volumes too).
pub fn ntfs_bitmap(data: &[u8]) {
    crate::fsmap::fuzz_free_space(data, reliquary_image::FileSystemKind::Ntfs);
}

/// A manifest for a 2 MiB stick whose GPT names `reliquary-verity` and
/// `reliquary-audit` (the seed `fuzz/run.sh` makes has this layout).
const STICK_MANIFEST: &str = "reliquary-stick-manifest 2
root-hash 0000000000000000000000000000000000000000000000000000000000000000
cmdline reliquary.roothash=0000000000000000000000000000000000000000000000000000000000000000
sectors 4096
region protective-mbr 0 1 0000000000000000000000000000000000000000000000000000000000000000
region primary-gpt 1 33 0000000000000000000000000000000000000000000000000000000000000000
region backup-gpt 4063 33 0000000000000000000000000000000000000000000000000000000000000000
partition reliquary-verity 2048 512 0000000000000000000000000000000000000000000000000000000000000000
audit-fs-uuid 52454c51-4155-4449-5400-000000000001
";

/// Checks arbitrary bytes as a stick against a fixed manifest: the GPT,
/// the audit partition's superblock and the verity superblock are read
/// from the input.
pub fn stick_verify(data: &[u8]) {
    if let Ok(manifest) = crate::stick::parse_manifest(STICK_MANIFEST) {
        let _ = crate::stick::verify_reader(&data, data.len() as u64, &manifest);
    }
}

/// Parses arbitrary bytes as NTFS `$LogFile` restart pages and MFT
/// records, checking their data runs (the walker behind `ntfs_bitmap`,
/// reached directly: the `ntfs` crate rejects most inputs before it).
pub fn ntfs_records(data: &[u8]) {
    crate::fsmap::fuzz_ntfs_records(data);
}

/// Follows cluster chains through arbitrary bytes taken as a FAT.
pub fn fat_chains(data: &[u8]) {
    crate::fsmap::fuzz_fat_chains(data);
}

/// Walks arbitrary bytes as ext inodes, their extent trees and block maps.
pub fn ext_inodes(data: &[u8]) {
    crate::fsmap::fuzz_ext_inodes(data);
}

/// Judges the sector size of arbitrary bytes taken as a disk's start.
pub fn sector_size(data: &[u8]) {
    let _ = crate::partition::detect_sector_size(data, data.len() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::{gpt_disk, gpt_disk_with_entries};

    #[test]
    fn the_partition_harness_runs_the_validator_and_the_relocation_on_real_tables() {
        for disk in [gpt_disk(8192), gpt_disk_with_entries(8192, 256)] {
            partition_table(&disk);
            let mut damaged = disk.clone();
            damaged[84 + 512] = 0xff; // the entry size, CRC now wrong too
            partition_table(&damaged);
            partition_table(&disk[..3 * 512]);
        }
    }

    #[test]
    fn the_harnesses_survive_empty_and_short_inputs() {
        for data in [&b""[..], b"x", &[0xff; 600], &[0; 5000]] {
            audit_log(data);
            checkpoint(data);
            mountinfo(data);
            partition_table(data);
            ext_bitmaps(data);
            fat_table(data);
            ntfs_records(data);
            fat_chains(data);
            ext_inodes(data);
            ntfs_bitmap(data);
            sector_size(data);
            stick_verify(data);
            operators(data);
        }
        assert!(PublicKey::from_bytes(SOME_KEY).is_ok());
        assert!(crate::stick::parse_manifest(STICK_MANIFEST).is_ok());
    }

    #[test]
    fn the_operators_harness_round_trips_a_list_with_both_roles() {
        let mut list = OperatorList::default();
        for (id, role) in [
            ("op7", crate::operators::Role::Technician),
            ("qa2", crate::operators::Role::Supervisor),
        ] {
            list.add(id, "Alice Jones", role, "123456", 6).expect("add");
        }
        operators(list.to_text().as_bytes());
        operators(b"op7 $argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaA role=supervisor X\n");
    }
}
