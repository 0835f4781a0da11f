//! Full verification and verified extraction of an image, in parallel.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use reliquary_image::{ChunkDecoder, ExtentKind, Image, ImageError, PlacedExtent};

use crate::io::workers_within_budget;

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
    let chunk_count = image.index().chunks.len();
    let first_failure: Mutex<Option<(u64, ImageError)>> = Mutex::new(None);
    on_chunk_workers(image, chunk_count, |state, i| {
        let chunk = i as u32;
        let result = image
            .read_stored(chunk, &mut state.stored)
            .and_then(|entry| {
                let sectors = image.chunk_sectors(chunk);
                state
                    .decoder
                    .decode(chunk, &entry, &state.stored, &mut state.raw, sectors)
            });
        progress(state.stored.len() as u64);
        if let Err(e) = result {
            let sector = image.chunk_sectors(chunk).0;
            let mut first = first_failure.lock().unwrap_or_else(|e| e.into_inner());
            if first.as_ref().is_none_or(|(at, _)| sector < *at) {
                *first = Some((sector, e));
            }
        }
        true
    });
    match first_failure
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
    {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// A worker's reusable decoding state: a stored and a decoded chunk.
#[derive(Default)]
struct ChunkWork {
    decoder: ChunkDecoder,
    stored: Vec<u8>,
    raw: Vec<u8>,
}

/// Calls `work` for every index in `0..count` on as many threads as the
/// cores and the buffer budget allow (each holds a stored and a decoded
/// chunk), until `work` returns false. Threads of their own rather than
/// rayon's, whose per-split state could not be counted.
fn on_chunk_workers(
    image: &Image<File>,
    count: usize,
    work: impl Fn(&mut ChunkWork, usize) -> bool + Sync,
) {
    let chunk_size = image.manifest().chunk_size as usize;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = workers_within_budget(2 * chunk_size, cores).min(count);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut state = ChunkWork::default();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    if !work(&mut state, i) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
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
    let failure: Mutex<Option<ExtractError>> = Mutex::new(None);
    on_chunk_workers(image, data.len(), |state, i| {
        let extent = &data[i];
        let ExtentKind::Data { chunk } = extent.kind else {
            return true;
        };
        let result = (|| -> Result<(), ExtractError> {
            let entry = image.read_stored(chunk, &mut state.stored)?;
            let sectors = (extent.start_sector, extent.end_sector());
            state
                .decoder
                .decode(chunk, &entry, &state.stored, &mut state.raw, sectors)?;
            let offset = extent.start_sector * sector;
            file.write_all_at(&state.raw, offset)
                .map_err(|e| write_err(offset, e))?;
            progress(state.raw.len() as u64);
            Ok(())
        })();
        let Err(e) = result else { return true };
        failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
        false
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    file.sync_all().map_err(|e| write_err(0, e))
}
