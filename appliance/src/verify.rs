//! Full verification and verified extraction of an image, in parallel.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use reliquary_image::{ChunkDecoder, ExtentKind, Image, ImageError, PlacedExtent};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path} at byte {offset}: {source}")]
    Write {
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// Decodes and checks every stored chunk. On failure, names the damaged
/// chunk with the lowest sector. `progress` receives stored bytes checked.
pub fn verify_chunks(
    image: &Image<File>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), ImageError> {
    let chunk_count = image.index().chunks.len() as u32;
    let first_failure = (0..chunk_count)
        .into_par_iter()
        .map_init(
            || (ChunkDecoder::new(), Vec::new(), Vec::new()),
            |(decoder, stored, raw), chunk| {
                let result = image.read_stored(chunk, stored).and_then(|entry| {
                    decoder.decode(chunk, &entry, stored, raw, image.chunk_sectors(chunk))
                });
                progress(stored.len() as u64);
                result.err().map(|e| (image.chunk_sectors(chunk).0, e))
            },
        )
        .flatten()
        .min_by_key(|(sector, _)| *sector);
    match first_failure {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Writes the whole raw disk to a new file `out`, sparse where zero.
/// Every chunk is verified before its bytes are written.
pub fn extract(
    image: &Image<File>,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), ExtractError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|source| ExtractError::Create {
            path: out.to_path_buf(),
            source,
        })?;
    let result = write_extents(image, &file, out, progress);
    if result.is_err() {
        // Leave no file that could be mistaken for a good extraction.
        let _ = std::fs::remove_file(out);
    }
    result
}

fn write_extents(
    image: &Image<File>,
    file: &File,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), ExtractError> {
    let sector = u64::from(image.sector_size());
    let write_err = |offset, source| ExtractError::Write {
        path: out.to_path_buf(),
        offset,
        source,
    };
    let total = image.manifest().logical_bytes();
    file.set_len(total).map_err(|e| write_err(total, e))?;
    let data: Vec<PlacedExtent> = image
        .extents()
        .filter(|e| matches!(e.kind, ExtentKind::Data { .. }))
        .collect();
    data.par_iter().try_for_each_init(
        || (ChunkDecoder::new(), Vec::new(), Vec::new()),
        |(decoder, stored, raw), extent| -> Result<(), ExtractError> {
            let ExtentKind::Data { chunk } = extent.kind else {
                return Ok(());
            };
            let entry = image.read_stored(chunk, stored)?;
            let sectors = (extent.start_sector, extent.end_sector());
            decoder.decode(chunk, &entry, stored, raw, sectors)?;
            let offset = extent.start_sector * sector;
            file.write_all_at(raw, offset)
                .map_err(|e| write_err(offset, e))?;
            progress(raw.len() as u64);
            Ok(())
        },
    )?;
    file.sync_all().map_err(|e| write_err(0, e))
}
