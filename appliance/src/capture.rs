//! Capture: read a raw disk (file, ISO or block device) and write a signed
//! image. Reading, zero detection, hashing and compression overlap: a few
//! threads read windows, workers compress them on all cores, and the
//! calling thread writes them in order. A fixed pool of window tokens
//! bounds memory whatever the disk size.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use reliquary_image::keys::SigningKey;
use reliquary_image::layout::MAX_CHUNKS;
use reliquary_image::write::create_image_file;
use reliquary_image::{
    ExtentKind, ImageError, ImageWriter, Manifest, ManifestDraft, PartitionCapture, PreparedChunk,
    SignerStatement, SourceDisk,
};

use crate::discover::{DevNum, MountEntry};
use crate::exit::ExitClass;
use crate::fsmap;
use crate::io::{is_zero, DirectReader};
use crate::partition;
use crate::sys::{self, AlignedBuf};

/// What to capture and how.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub name: String,
    pub description: String,
    pub version: String,
    pub compatible: Vec<String>,
    pub statement: SignerStatement,
    pub chunk_size: u32,
    /// zstd level (1 to 19).
    pub level: i32,
    /// Zero runs are detected in blocks of this many bytes.
    pub zero_grain: u32,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub threads: usize,
    pub created_unix: i64,
    /// Keep every sector, even the free space of recognised file systems.
    pub all_sectors: bool,
}

/// What a capture produced.
#[derive(Debug, Clone)]
pub struct CaptureReport {
    pub manifest: Manifest,
    /// Why no partition table was summarised, if none was.
    pub partition_note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot read the source at byte {offset}: {source}")]
    Read { offset: u64, source: std::io::Error },
    #[error("the source is {size} bytes, not a whole number of {sector_size}-byte sectors")]
    PartialSector { size: u64, sector_size: u32 },
    #[error("the zero grain {0} must be a power of two from 4 KiB to 64 KiB")]
    ZeroGrain(u32),
    #[error(
        "a chunk size of {chunk_size} bytes is too small for a disk of {size} bytes: an image \
         holds at most {max_chunks} chunks; capture with --chunk-size {} or larger",
        size_argument(*.min_chunk_size)
    )]
    ChunkSizeTooSmall {
        size: u64,
        chunk_size: u32,
        min_chunk_size: u64,
        max_chunks: u64,
    },
    #[error("cannot move the finished image into place at {path}: {source}")]
    Rename {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing to capture {device}: {mounted} is mounted read-write on {mount_point}; \
         unmount it or mount it read-only first"
    )]
    MountedWritable {
        device: PathBuf,
        mounted: DevNum,
        mount_point: PathBuf,
    },
    #[error("cannot list the partitions of {device} in {dir}: {source}")]
    Partitions {
        device: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl CaptureError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            CaptureError::MountedWritable { .. } => ExitClass::Refused,
            CaptureError::ChunkSizeTooSmall { .. } => ExitClass::Usage,
            CaptureError::Image(e) if e.is_integrity_failure() => ExitClass::Integrity,
            _ => ExitClass::Runtime,
        }
    }
}

/// Refuses a source disk (`disk`, the device number of `device`) when it or
/// one of its partitions is mounted read-write: a file system that changes
/// while it is read is captured torn. Partitions are found under
/// `sysfs_root/dev/block/MAJ:MIN`, mounts in `mounts` (from mountinfo).
pub fn refuse_writable_mounts(
    sysfs_root: &Path,
    device: &Path,
    disk: DevNum,
    mounts: &[MountEntry],
) -> Result<(), CaptureError> {
    let dir = sysfs_root.join("dev/block").join(disk.to_string());
    let list_error = |source| CaptureError::Partitions {
        device: device.to_path_buf(),
        dir: dir.clone(),
        source,
    };
    let mut devnums = vec![disk];
    for entry in std::fs::read_dir(&dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        if !path.join("partition").exists() {
            continue;
        }
        let text = std::fs::read_to_string(path.join("dev")).map_err(list_error)?;
        if let Some(devnum) = DevNum::parse(&text) {
            devnums.push(devnum);
        }
    }
    let writable = mounts.iter().find(|m| {
        devnums.contains(&m.devnum) && !m.options.split(',').any(|option| option == "ro")
    });
    match writable {
        Some(m) => Err(CaptureError::MountedWritable {
            device: device.to_path_buf(),
            mounted: m.devnum,
            mount_point: m.mount_point.clone(),
        }),
        None => Ok(()),
    }
}

enum Piece {
    Zero(u64),
    Unmapped(u64),
    Data(PreparedChunk),
}

/// Captures `source` (of `size` bytes) into a new image at `out`.
/// The image is written under a temporary name and renamed when complete.
pub fn capture(
    source: &File,
    size: u64,
    out: &Path,
    key: &SigningKey,
    opts: &CaptureOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CaptureReport, CaptureError> {
    let sector = opts.logical_sector_size;
    if size % u64::from(sector) != 0 {
        return Err(CaptureError::PartialSector {
            size,
            sector_size: sector,
        });
    }
    if !opts.zero_grain.is_power_of_two() || !(4096..=65536).contains(&opts.zero_grain) {
        return Err(CaptureError::ZeroGrain(opts.zero_grain));
    }
    // Refused before the disk is read rather than when the writer reaches
    // the ceiling an hour later.
    if size.div_ceil(u64::from(opts.chunk_size.max(1))) > MAX_WINDOWS {
        return Err(CaptureError::ChunkSizeTooSmall {
            size,
            chunk_size: opts.chunk_size,
            min_chunk_size: size.div_ceil(MAX_WINDOWS).next_power_of_two(),
            max_chunks: MAX_CHUNKS,
        });
    }
    let (partition_table, partition_note) =
        partition::summarize(source, sector, size / u64::from(sector));
    let plans = fsmap::plan_partitions(
        source,
        size,
        &partition_table,
        sector,
        opts.all_sectors,
        min_hole_bytes(size),
    );
    let free = free_ranges(&plans, &partition_table, sector);
    let partition_captures = plans.into_iter().map(|p| p.record).collect();
    if out.symlink_metadata().is_ok() {
        return Err(CaptureError::Rename {
            path: out.to_path_buf(),
            source: std::io::ErrorKind::AlreadyExists.into(),
        });
    }
    let partial = partial_path(out);
    let file = create_image_file(&partial)?;
    let result = write_image(
        source,
        size,
        BufWriter::with_capacity(1 << 20, file),
        key,
        opts,
        progress,
        partition_table,
        partition_captures,
        &free,
    );
    match result {
        Ok(manifest) => {
            move_into_place(&partial, out).map_err(|source| {
                let _ = std::fs::remove_file(&partial);
                CaptureError::Rename {
                    path: out.to_path_buf(),
                    source,
                }
            })?;
            Ok(CaptureReport {
                manifest,
                partition_note,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Moves the finished image to `out` without replacing an existing file:
/// a hard link fails if `out` exists; where links are unsupported (FAT),
/// check and rename.
fn move_into_place(partial: &Path, out: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(partial, out) {
        Ok(()) => std::fs::remove_file(partial),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if out.symlink_metadata().is_ok() => Err(std::io::ErrorKind::AlreadyExists.into()),
        Err(_) => std::fs::rename(partial, out),
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

#[allow(clippy::too_many_arguments)]
fn write_image(
    source: &File,
    size: u64,
    out: BufWriter<File>,
    key: &SigningKey,
    opts: &CaptureOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
    partition_table: reliquary_image::PartitionTable,
    partition_captures: Vec<PartitionCapture>,
    free: &[Range<u64>],
) -> Result<Manifest, CaptureError> {
    let mut writer = ImageWriter::new(out, opts.chunk_size, opts.logical_sector_size)?;
    let window = u64::from(opts.chunk_size);
    let windows = size.div_ceil(window);
    let min_zero_run = min_hole_bytes(size).max(u64::from(opts.zero_grain)) as usize;
    let threads = opts.threads.max(1);
    // Enough windows for every reader and compressor, within the budget.
    let in_flight = (threads * 3 + READERS)
        .min((WINDOW_BUDGET_BYTES / window) as usize)
        .max(2);

    let (token_tx, token_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = token_tx.send(());
    }
    let token_rx = Mutex::new(token_rx);
    // (window number, its length, its bytes: empty when all free).
    let (window_tx, window_rx) = sync_channel::<(u64, u64, AlignedBuf)>(in_flight);
    let (piece_tx, piece_rx) = sync_channel::<(u64, Result<Vec<Piece>, CaptureError>)>(in_flight);
    let window_rx = Arc::new(Mutex::new(window_rx));
    let next_window = AtomicU64::new(0);
    let stop_reading = AtomicBool::new(false);
    let reader = &DirectReader::new(source);
    let spares = &SpareBuffers::new(in_flight, window as usize);

    std::thread::scope(|scope| -> Result<Manifest, CaptureError> {
        // Several readers keep several reads in flight: on a fragmented
        // volume each window is many small reads, and one reader waiting on
        // each in turn leaves the disk idle.
        for _ in 0..READERS {
            let (token_rx, next_window, stop_reading) = (&token_rx, &next_window, &stop_reading);
            let (reader_pieces, window_tx) = (piece_tx.clone(), window_tx.clone());
            scope.spawn(move || loop {
                let token = token_rx.lock().map(|rx| rx.recv());
                if !matches!(token, Ok(Ok(()))) || stop_reading.load(Ordering::SeqCst) {
                    return;
                }
                let seq = next_window.fetch_add(1, Ordering::SeqCst);
                if seq >= windows {
                    return;
                }
                let offset = seq * window;
                let len = window.min(size - offset) as usize;
                let segments = segments(offset..offset + len as u64, free);
                // A window of free clusters only is neither read nor given
                // a buffer: the cost follows the used bytes.
                let buf = if segments.iter().all(|(is_free, _)| *is_free) {
                    AlignedBuf::new(0, SOURCE_ALIGNMENT)
                } else {
                    spares.take()
                };
                let mut buf = match buf {
                    Ok(buf) => buf,
                    Err(e) => {
                        stop_reading.store(true, Ordering::SeqCst);
                        let source = std::io::Error::new(std::io::ErrorKind::OutOfMemory, e);
                        let _ =
                            reader_pieces.send((seq, Err(CaptureError::Read { offset, source })));
                        return;
                    }
                };
                for (is_free, range) in segments {
                    if is_free {
                        continue;
                    }
                    let at = (range.start - offset) as usize..(range.end - offset) as usize;
                    if let Err(source) =
                        reader.read_exact_at(&mut buf.as_mut_slice()[at], range.start)
                    {
                        stop_reading.store(true, Ordering::SeqCst);
                        let offset = range.start;
                        let _ =
                            reader_pieces.send((seq, Err(CaptureError::Read { offset, source })));
                        return;
                    }
                }
                if window_tx.send((seq, len as u64, buf)).is_err() {
                    return;
                }
            });
        }
        drop(window_tx);
        for _ in 0..threads {
            let compressor =
                zstd::bulk::Compressor::new(opts.level).map_err(ImageError::Compress)?;
            let rx = Arc::clone(&window_rx);
            let tx = piece_tx.clone();
            scope.spawn(move || {
                compress_worker(
                    compressor,
                    &rx,
                    &tx,
                    spares,
                    opts,
                    window,
                    min_zero_run,
                    free,
                )
            });
        }
        drop(piece_tx);

        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        while next < windows {
            let Ok((seq, pieces)) = piece_rx.recv() else {
                break;
            };
            pending.insert(seq, pieces);
            while let Some(pieces) = pending.remove(&next) {
                for piece in pieces? {
                    match piece {
                        Piece::Zero(sectors) => writer.add_run(sectors, ExtentKind::Zero)?,
                        Piece::Unmapped(sectors) => {
                            writer.add_run(sectors, ExtentKind::Unmapped)?
                        }
                        Piece::Data(chunk) => writer.add_data(&chunk)?,
                    }
                }
                next += 1;
                progress((next * window).min(size), size);
                let _ = token_tx.send(());
            }
        }
        // Dropping the token sender and receivers ends the other threads.
        drop(token_tx);
        drop(piece_rx);
        let draft = ManifestDraft {
            image_uuid: uuid::Uuid::new_v4(),
            name: opts.name.clone(),
            description: opts.description.clone(),
            version: opts.version.clone(),
            created_unix: opts.created_unix,
            creator: format!("reliquary {}", env!("CARGO_PKG_VERSION")),
            source: SourceDisk {
                size_sectors: size / u64::from(opts.logical_sector_size),
                logical_sector_size: opts.logical_sector_size,
                physical_sector_size: opts.physical_sector_size,
                model: opts.model.clone(),
                serial: opts.serial.clone(),
            },
            partition_table,
            compatible: opts.compatible.clone(),
            partition_captures,
        };
        let (out, manifest) = writer.finish(draft, key, &opts.statement)?;
        let file = out.into_inner().map_err(|e| ImageError::Write {
            offset: 0,
            source: e.into_error(),
        })?;
        file.sync_all()
            .map_err(|source| ImageError::Write { offset: 0, source })?;
        Ok(manifest)
    })
}

#[allow(clippy::too_many_arguments)]
fn compress_worker(
    mut compressor: zstd::bulk::Compressor<'static>,
    rx: &Mutex<Receiver<(u64, u64, AlignedBuf)>>,
    tx: &std::sync::mpsc::SyncSender<(u64, Result<Vec<Piece>, CaptureError>)>,
    spares: &SpareBuffers,
    opts: &CaptureOptions,
    window: u64,
    min_zero_run: usize,
    free: &[Range<u64>],
) {
    let sector = opts.logical_sector_size as usize;
    loop {
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok((seq, len, buf)) = job else { return };
        let offset = seq * window;
        let mut pieces = Vec::new();
        let mut failed = None;
        'segments: for (is_free, range) in segments(offset..offset + len, free) {
            if is_free {
                pieces.push(Piece::Unmapped((range.end - range.start) / sector as u64));
                continue;
            }
            let part =
                &buf.as_slice()[(range.start - offset) as usize..(range.end - offset) as usize];
            for (zero, run) in split_window(
                part,
                opts.zero_grain as usize,
                min_zero_run,
                opts.logical_sector_size,
            ) {
                if zero {
                    pieces.push(Piece::Zero((run.len() / sector) as u64));
                    continue;
                }
                match PreparedChunk::compress(&part[run], &mut compressor) {
                    Ok(chunk) => pieces.push(Piece::Data(chunk)),
                    Err(e) => {
                        failed = Some(CaptureError::Image(e));
                        break 'segments;
                    }
                }
            }
        }
        spares.give_back(buf);
        let result = match failed {
            Some(e) => Err(e),
            None => Ok(pieces),
        };
        if tx.send((seq, result)).is_err() {
            return;
        }
    }
}

/// Splits `window` (disk bytes) into runs that are free or not, by the
/// sorted, disjoint `free` ranges.
fn segments(window: Range<u64>, free: &[Range<u64>]) -> Vec<(bool, Range<u64>)> {
    let mut out = Vec::new();
    let mut at = window.start;
    let first = free.partition_point(|r| r.end <= window.start);
    for r in free[first..].iter().take_while(|r| r.start < window.end) {
        let start = r.start.max(window.start);
        if start > at {
            out.push((false, at..start));
        }
        let end = r.end.min(window.end);
        out.push((true, start..end));
        at = end;
    }
    if at < window.end {
        out.push((false, at..window.end));
    }
    out
}

/// The free ranges of every planned partition, sorted, without any that
/// reach into another partition (overlapping partitions keep their bytes;
/// extended-partition containers do not count).
fn free_ranges(
    plans: &[fsmap::PartitionPlan],
    table: &reliquary_image::PartitionTable,
    sector: u32,
) -> Vec<Range<u64>> {
    let sector = u64::from(sector);
    // An MBR extended partition is a container of logical ones, not a neighbour.
    let spans: Vec<(u32, Range<u64>)> = table
        .partitions
        .iter()
        .filter(|p| !matches!(p.type_code.as_str(), "0x05" | "0x0f" | "0x85"))
        .map(|p| {
            let start = p.start_sector.saturating_mul(sector);
            (
                p.number,
                start..start.saturating_add(p.sector_count.saturating_mul(sector)),
            )
        })
        .collect();
    let spans = &spans;
    let mut free: Vec<Range<u64>> = plans
        .iter()
        .flat_map(|plan| {
            let own = plan.record.partition_number;
            plan.free.iter().filter(move |r| {
                !spans
                    .iter()
                    .any(|(n, s)| *n != own && s.start < r.end && r.start < s.end)
            })
        })
        .cloned()
        .collect();
    free.sort_by_key(|r| r.start);
    free
}

/// Reader threads of a capture: the reads in flight. A file system's used
/// clusters lie scattered, and a disk serves many small reads at once
/// faster than one after another: on the 64 GiB benchmark disk, 16 (with
/// O_DIRECT) took the capture from 1.2–1.3× to 1.14× the time of the 8 GiB
/// one with the same files (benches/HISTORY.md, run 5).
const READERS: usize = 16;

/// The most bytes the windows in flight may hold, whatever the chunk size
/// and the number of cores.
const WINDOW_BUDGET_BYTES: u64 = 96 << 20;

/// The buffer alignment of the source's O_DIRECT reads (a multiple of any
/// logical sector size). Window and free-range boundaries are whole
/// sectors, so every read's offset, length and address are aligned too.
const SOURCE_ALIGNMENT: usize = 4096;

/// Window buffers, reused: at most one per window in flight, allocated on
/// first need. Only the used ranges of a window are read into its buffer
/// and only they are looked at, so what an earlier window left in the free
/// ranges is never used. (Allocating a fresh aligned buffer per window let
/// the allocator's heap grow to 1.6 GB on an 8 GiB disk.)
struct SpareBuffers {
    returned: SyncSender<AlignedBuf>,
    spare: Mutex<Receiver<AlignedBuf>>,
    len: usize,
}

impl SpareBuffers {
    fn new(count: usize, len: usize) -> Self {
        let (returned, spare) = sync_channel(count);
        Self {
            returned,
            spare: Mutex::new(spare),
            len,
        }
    }

    fn take(&self) -> Result<AlignedBuf, sys::AlignError> {
        match self.spare.lock().ok().and_then(|s| s.try_recv().ok()) {
            Some(buf) => Ok(buf),
            None => AlignedBuf::with_min_len(self.len, SOURCE_ALIGNMENT),
        }
    }

    fn give_back(&self, buf: AlignedBuf) {
        if !buf.is_empty() {
            let _ = self.returned.try_send(buf);
        }
    }
}

/// A power-of-two byte count as `--chunk-size` takes it (`128K`, `4M`).
fn size_argument(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}

/// The most chunk-sized windows a disk may span: half the chunk ceiling,
/// the other half being left for data runs split by holes.
const MAX_WINDOWS: u64 = MAX_CHUNKS / 2;

/// The shortest zero or free run captured as a hole (`Zero` or `Unmapped`)
/// on a disk of `disk_bytes`; shorter ones are kept as data. Holes then
/// number at most an eighth of [`MAX_CHUNKS`], so however the disk's bytes
/// alternate, its data runs (at most holes + windows) stay within the chunk
/// ceiling and its extents (holes + data runs) within the extent ceiling:
/// a capture never makes an image that a reader refuses.
pub fn min_hole_bytes(disk_bytes: u64) -> u64 {
    (disk_bytes.saturating_mul(8) / MAX_CHUNKS).next_power_of_two()
}

/// Splits a window into alternating zero and data runs, detected in blocks
/// of `grain` bytes (the tail block may be shorter, in whole sectors). Zero
/// runs shorter than `min_zero_run` stay in the data around them.
pub fn split_window(
    buf: &[u8],
    grain: usize,
    min_zero_run: usize,
    sector_size: u32,
) -> Vec<(bool, std::ops::Range<usize>)> {
    debug_assert!(buf.len() % sector_size as usize == 0);
    let mut blocks: Vec<(bool, std::ops::Range<usize>)> = Vec::new();
    let mut at = 0;
    for block in buf.chunks(grain) {
        let zero = is_zero(block);
        let end = at + block.len();
        match blocks.last_mut() {
            Some((kind, range)) if *kind == zero => range.end = end,
            _ => blocks.push((zero, at..end)),
        }
        at = end;
    }
    let mut runs: Vec<(bool, std::ops::Range<usize>)> = Vec::with_capacity(blocks.len());
    for (zero, range) in blocks {
        let zero = zero && range.len() >= min_zero_run;
        match runs.last_mut() {
            Some((kind, last)) if *kind == zero => last.end = range.end,
            _ => runs.push((zero, range)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_window_separates_zero_runs_at_the_grain() {
        let mut buf = vec![0u8; 16384];
        buf[5000] = 1; // block 1
        buf[16383] = 1; // block 3
        let runs = split_window(&buf, 4096, 4096, 512);
        assert_eq!(
            runs,
            vec![
                (true, 0..4096),
                (false, 4096..8192),
                (true, 8192..12288),
                (false, 12288..16384)
            ]
        );
    }

    #[test]
    fn split_window_handles_a_short_tail() {
        let buf = vec![7u8; 4096 + 512];
        assert_eq!(split_window(&buf, 4096, 4096, 512), vec![(false, 0..4608)]);
    }

    #[test]
    fn split_window_keeps_short_zero_runs_in_the_data() {
        let mut buf = vec![1u8; 8 * 4096];
        buf[4096..8192].fill(0); // one zero block: too short
        buf[16384..].fill(0); // four zero blocks: a hole
        assert_eq!(
            split_window(&buf, 4096, 16384, 512),
            vec![(false, 0..16384), (true, 16384..32768)]
        );
    }

    /// However a disk's bytes alternate, a capture stays within the
    /// counts every reader accepts: holes of at least `min_hole_bytes`
    /// number at most size / min_hole, data runs at most holes + windows,
    /// extents at most holes + data runs.
    #[test]
    fn the_hole_size_keeps_every_disk_within_the_reader_ceilings() {
        for shift in 20..=44 {
            let size: u64 = 1 << shift;
            let size = size + size / 3; // not only powers of two
            let holes = size / min_hole_bytes(size) + 1;
            let windows = size
                .div_ceil(u64::from(reliquary_image::layout::MIN_CHUNK_SIZE))
                .min(MAX_WINDOWS);
            let chunks = holes + windows;
            assert!(chunks <= MAX_CHUNKS, "{size}: {chunks} chunks");
            assert!(
                holes + chunks <= reliquary_image::layout::MAX_EXTENTS,
                "{size}"
            );
        }
    }
}
