//! How much of an image a disk already holds, estimated from a sample, so
//! the operator can be told what a resume would save before choosing it.

use std::fs::File;
use std::path::Path;

use reliquary_image::{ExtentKind, Image, PlacedExtent};

use super::compare::{open_for_reading, walk_extents, ExtentCheck};
use super::{CancelToken, RestoreError};

/// At most this many data extents are read: the estimate costs a few
/// hundred MiB of reading at most, whatever the image's size.
pub const MAX_SAMPLED_EXTENTS: usize = 64;

/// The share of the image's data, in percent (0 to 100), that `target`
/// already holds: data extents evenly spaced across the image are read
/// with O_DIRECT (where the file system allows it) and hashed against the
/// signed chunk digests. A target that cannot be opened or read is an
/// error, never a number.
pub fn already_written_percent(image: &Image<File>, target: &Path) -> Result<u8, RestoreError> {
    let disk = open_for_reading(target).map_err(|source| RestoreError::TargetIo {
        operation: "open for the estimate",
        offset: 0,
        source,
    })?;
    let data_extents = image
        .extents()
        .filter(|e| matches!(e.kind, ExtentKind::Data { .. }))
        .count();
    let samples = data_extents.min(MAX_SAMPLED_EXTENTS);
    if samples == 0 {
        return Ok(0);
    }
    // The ordinals, among data extents, of the sampled ones: evenly spaced.
    let mut sampled: Vec<usize> = (0..samples).map(|i| i * data_extents / samples).collect();
    sampled.dedup();
    let mut data_seen = 0;
    let chosen: Vec<usize> = image
        .extents()
        .filter(|e| matches!(e.kind, ExtentKind::Data { .. }))
        .filter_map(|e| {
            let pick = sampled.binary_search(&data_seen).is_ok();
            data_seen += 1;
            pick.then_some(e.ordinal)
        })
        .collect();
    let read = |e: &PlacedExtent| chosen.binary_search(&e.ordinal).is_ok();
    let sector = u64::from(image.sector_size());
    let (mut read_bytes, mut matching_bytes) = (0u64, 0u64);
    let mut visit = |e: &PlacedExtent, check: Option<ExtentCheck>| {
        let Some(check) = check else {
            return;
        };
        let bytes = e.sector_count * sector;
        read_bytes += bytes;
        if check.mismatch.is_none() {
            matching_bytes += bytes;
        }
    };
    walk_extents(
        image,
        &disk,
        &read,
        &[],
        &|_| {},
        &CancelToken::new(),
        &mut visit,
    )?;
    if read_bytes == 0 {
        return Ok(0);
    }
    Ok(((matching_bytes as u128 * 100) / read_bytes as u128) as u8)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    use super::super::test_image::{disk_and_image, CHUNK, DISK};

    #[test]
    fn the_estimate_follows_how_much_of_the_target_holds_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (bytes, image) = disk_and_image(dir.path());
        let target = dir.path().join("target.raw");
        let file = File::create(&target).expect("creates the target");
        file.set_len(DISK).expect("sizes the target");
        assert_eq!(already_written_percent(&image, &target).expect("reads"), 0);

        // The first half written, as a restore killed halfway leaves it.
        file.write_all_at(&bytes[..(DISK / 2) as usize], 0)
            .expect("writes");
        let half = already_written_percent(&image, &target).expect("reads");
        assert!((45..=55).contains(&half), "{half} %");

        file.write_all_at(&bytes, 0).expect("writes");
        assert_eq!(
            already_written_percent(&image, &target).expect("reads"),
            100
        );

        // One flipped byte in a sampled chunk (the first) lowers it.
        file.write_all_at(&[0], 100).expect("writes");
        assert!(already_written_percent(&image, &target).expect("reads") < 100);
    }

    #[test]
    fn an_unreadable_target_is_an_error_not_a_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, image) = disk_and_image(dir.path());
        let missing = dir.path().join("missing.raw");
        assert!(already_written_percent(&image, &missing).is_err());
        // Too short to hold the sampled extents: reading fails.
        let short = dir.path().join("short.raw");
        File::create(&short)
            .and_then(|f| f.set_len(CHUNK))
            .expect("creates");
        assert!(already_written_percent(&image, &short).is_err());
    }
}
