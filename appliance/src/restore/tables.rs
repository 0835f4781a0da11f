//! The partition-table areas of a restore: which extents lie in them, and
//! the edits a GPT image needs on a larger disk, computed in memory from
//! the image's verified bytes and validated before any is written.

use std::fs::File;

use reliquary_image::{ChunkDecoder, ExtentKind, Image, PartitionScheme, PlacedExtent, ReadAt};

use super::{RestoreError, WIPE_BYTES};
use crate::partition::{parse_header_sector, plan_relocation, validate_gpt};

/// Bytes the restore writes over what the image holds at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub offset: u64,
    pub bytes: Vec<u8>,
    /// The image's bytes there; empty beyond the image's end.
    pub original: Vec<u8>,
}

impl Edit {
    pub fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }

    /// Copies this edit's bytes (or, with `original`, the image's) into
    /// `buf`, which holds the disk from `buf_offset`, where they overlap.
    pub fn patch(&self, buf: &mut [u8], buf_offset: u64, original: bool) {
        let source = if original {
            &self.original
        } else {
            &self.bytes
        };
        let start = self.offset.max(buf_offset);
        let end = self.end().min(buf_offset + buf.len() as u64);
        if start >= end || source.len() != self.bytes.len() {
            return;
        }
        let (from, to) = ((start - self.offset) as usize, (end - self.offset) as usize);
        let at = (start - buf_offset) as usize;
        buf[at..at + (to - from)].copy_from_slice(&source[from..to]);
    }

    /// Whether `buf` (the disk from `buf_offset`) holds this edit's bytes
    /// where they overlap.
    pub fn holds(&self, buf: &[u8], buf_offset: u64) -> bool {
        let start = self.offset.max(buf_offset);
        let end = self.end().min(buf_offset + buf.len() as u64);
        if start >= end {
            return true;
        }
        let (from, to) = ((start - self.offset) as usize, (end - self.offset) as usize);
        let at = (start - buf_offset) as usize;
        buf[at..at + (to - from)] == self.bytes[from..to]
    }
}

/// The partition-table areas of an image and the edits for one target.
#[derive(Debug, Clone, Default)]
pub struct TablePlan {
    /// Sectors `0..head_end` form the head area.
    pub head_end: u64,
    /// Sectors `tail_start..image end` form the tail area.
    pub tail_start: u64,
    /// Edits inside the image's range (protective MBR, primary header,
    /// the old backup zeroed), in offset order.
    pub in_image: Vec<Edit>,
    /// The relocated backup entries and header, beyond the image's end.
    pub beyond: Vec<Edit>,
}

impl TablePlan {
    /// Plans the areas for `image` and, on a GPT image restored onto a
    /// disk of `target_sectors` that is larger, the relocation edits.
    pub fn new(image: &Image<File>, target_sectors: u64) -> Result<Self, RestoreError> {
        let sector = u64::from(image.sector_size());
        let image_sectors = image.manifest().source.size_sectors;
        let area = WIPE_BYTES / sector;
        let mut plan = TablePlan {
            head_end: area.min(image_sectors),
            tail_start: image_sectors.saturating_sub(area),
            ..TablePlan::default()
        };
        let is_gpt = matches!(
            image.manifest().partition_table.scheme,
            PartitionScheme::Gpt { .. }
        );
        if !is_gpt {
            return Ok(plan);
        }
        if target_sectors <= image_sectors {
            // Written as it is: validated now, so that a table the
            // read-back would refuse is never written.
            validate_gpt(&image_table(image)?, image.sector_size(), image_sectors)
                .map_err(RestoreError::ImageGpt)?;
            return Ok(plan);
        }
        let ss = sector as usize;
        let head = read_image_bytes(image, 0, 2 * ss)?;
        let header = parse_header_sector(&head[ss..], image_sectors)?;
        let entries = read_image_bytes(
            image,
            header.entries_lba * sector,
            (u64::from(header.entry_count) * u64::from(header.entry_size)) as usize,
        )?;
        let Some(relocation) = plan_relocation(
            &head[..ss],
            &head[ss..],
            &entries,
            image.sector_size(),
            image_sectors,
            target_sectors,
        )?
        else {
            return Ok(plan);
        };
        let old_start = relocation.old_backup.start * sector;
        let old_len = ((relocation.old_backup.end - relocation.old_backup.start) * sector) as usize;
        plan.in_image = vec![
            Edit {
                offset: 0,
                bytes: relocation.sector0.clone(),
                original: head[..ss].to_vec(),
            },
            Edit {
                offset: sector,
                bytes: relocation.primary_header.clone(),
                original: head[ss..].to_vec(),
            },
            Edit {
                offset: old_start,
                bytes: vec![0; old_len],
                original: read_image_bytes(image, old_start, old_len)?,
            },
        ];
        plan.beyond = vec![
            Edit {
                offset: relocation.backup_entries_lba * sector,
                bytes: relocation.entries.clone(),
                original: Vec::new(),
            },
            Edit {
                offset: relocation.backup_header_lba * sector,
                bytes: relocation.backup_header.clone(),
                original: Vec::new(),
            },
        ];
        // The table the disk will hold, validated before a byte of it is
        // written: the edited head, the primary entries, the moved backup.
        let mut future = Overlay {
            len: target_sectors * sector,
            parts: plan
                .in_image
                .iter()
                .chain(&plan.beyond)
                .map(|e| (e.offset, e.bytes.clone()))
                .collect(),
        };
        future.parts.push((header.entries_lba * sector, entries));
        validate_gpt(&future, image.sector_size(), target_sectors)?;
        Ok(plan)
    }

    /// Whether an extent touches a partition-table area.
    pub fn in_areas(&self, extent: &PlacedExtent) -> bool {
        extent.start_sector < self.head_end || extent.end_sector() > self.tail_start
    }
}

/// The image's GPT (both headers and both entry arrays) over zeros, read
/// from its verified chunks: what [`validate_gpt`] reads of the disk.
fn image_table(image: &Image<File>) -> Result<Overlay, RestoreError> {
    let sector = u64::from(image.sector_size());
    let image_sectors = image.manifest().source.size_sectors;
    let last = image_sectors.saturating_sub(1) * sector;
    let mut parts = Vec::new();
    for header_at in [sector, last] {
        let header_sector = read_image_bytes(image, header_at, sector as usize)?;
        let header =
            parse_header_sector(&header_sector, image_sectors).map_err(RestoreError::ImageGpt)?;
        let entries_at = header.entries_lba * sector;
        let entries_len = u64::from(header.entry_count) * u64::from(header.entry_size);
        let entries_len = entries_len.min(image_sectors * sector - entries_at) as usize;
        parts.push((
            entries_at,
            read_image_bytes(image, entries_at, entries_len)?,
        ));
        parts.push((header_at, header_sector));
    }
    parts.push((0, read_image_bytes(image, 0, sector as usize)?));
    Ok(Overlay {
        len: image_sectors * sector,
        parts,
    })
}

/// Reads `len` bytes of the image's disk from `offset`, every data chunk
/// decompressed and verified; zero and unmapped extents read as zeros.
pub fn read_image_bytes(
    image: &Image<File>,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, RestoreError> {
    let sector = u64::from(image.sector_size());
    let mut out = vec![0u8; len];
    let mut decoder = ChunkDecoder::new();
    let mut chunk_bytes = Vec::new();
    let end = offset + len as u64;
    let mut at = offset;
    while at < end {
        let extent = image.extent_at_sector(at / sector)?;
        let (e_start, e_end) = (extent.start_sector * sector, extent.end_sector() * sector);
        let stop = e_end.min(end);
        if let ExtentKind::Data { chunk } = extent.kind {
            image.read_chunk(chunk, &mut decoder, &mut chunk_bytes)?;
            let from = (at - e_start) as usize;
            let to = (stop - e_start) as usize;
            let dest = (at - offset) as usize;
            let Some(src) = chunk_bytes.get(from..to) else {
                return Err(RestoreError::Image(
                    reliquary_image::ImageError::InvalidIndex {
                        location: format!("chunk {chunk}"),
                        reason: "it is shorter than its extent".into(),
                    },
                ));
            };
            out[dest..dest + (to - from)].copy_from_slice(src);
        }
        at = stop;
    }
    Ok(out)
}

/// A disk of `len` bytes that holds `parts` and zeros elsewhere.
struct Overlay {
    len: u64,
    parts: Vec<(u64, Vec<u8>)>,
}

impl ReadAt for Overlay {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.fill(0);
        for (at, bytes) in &self.parts {
            let (start, stop) = ((*at).max(offset), (at + bytes.len() as u64).min(end));
            if start < stop {
                buf[(start - offset) as usize..(stop - offset) as usize]
                    .copy_from_slice(&bytes[(start - at) as usize..(stop - at) as usize]);
            }
        }
        Ok(())
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_patch_and_check_only_where_they_overlap() {
        let edit = Edit {
            offset: 10,
            bytes: vec![1; 4],
            original: vec![2; 4],
        };
        let mut buf = vec![0u8; 8];
        edit.patch(&mut buf, 8, false);
        assert_eq!(buf, [0, 0, 1, 1, 1, 1, 0, 0]);
        assert!(edit.holds(&buf, 8));
        edit.patch(&mut buf, 8, true);
        assert_eq!(buf, [0, 0, 2, 2, 2, 2, 0, 0]);
        assert!(!edit.holds(&buf, 8));
        let mut tail = vec![0u8; 4];
        edit.patch(&mut tail, 12, false);
        assert_eq!(tail, [1, 1, 0, 0]);
        assert!(edit.holds(&[9; 4], 100));
    }
}
