//! The bulk phase for every live target: one reader thread, decoders on
//! every core verifying each chunk once, and one O_DIRECT writer thread per
//! target, within the shared buffer budget.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use reliquary_image::{
    ChunkDecoder, ChunkEntry, ExtentKind, Image, ImageError, PlacedExtent, SectionName,
};

use super::progress::Meter;
use super::resume::Compared;
use super::write::{write_bytes_aligned, zero_range};
use super::{fail_together, Lane, IO_ALIGNMENT};
use crate::audit::Unmapped;
use crate::io::{DirectReader, BUFFER_BUDGET_BYTES};
use crate::restore::{CancelToken, RestoreError, RestoreOptions};
use crate::sys::AlignedBuf;

/// Which extents of phase 2 a pass writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Region {
    /// Those not compared with the disk first: all of them, or those past
    /// a resume's frontier.
    Uncompared,
    /// Those compared and found differing.
    Compared,
}

/// What a pass of phase 2 did: each writer's result, by live lane, and the
/// error that stopped them all, if any.
pub(super) struct BulkOutcome {
    live: Vec<usize>,
    results: Vec<WriterResult>,
    shared_error: Option<RestoreError>,
}

/// Phase 2 for every live target: one reader thread, decoders on every
/// core verifying each chunk once, this thread handing each verified chunk
/// to every target that needs it, and one O_DIRECT writer thread per
/// target. A target whose write fails drops out and the others carry on;
/// a chunk that fails its check, a read error or a cancel stops them all,
/// since nothing unverified may be written anywhere. Order does not matter
/// here: none of these extents is in a partition-table area.
pub(super) fn spread_bulk(
    image: &Image<File>,
    lanes: &[Lane],
    meters: &[Meter],
    region: Region,
    opts: &RestoreOptions,
    cancel: &CancelToken,
) -> BulkOutcome {
    let live: Vec<usize> = (0..lanes.len()).filter(|&i| lanes[i].live()).collect();
    let anything = live.iter().any(|&i| match region {
        Region::Uncompared => lanes[i].compared != Compared::Everything,
        Region::Compared => lanes[i].compared != Compared::Nothing,
    });
    if !anything {
        return BulkOutcome {
            live,
            results: Vec::new(),
            shared_error: None,
        };
    }
    let (results, shared_error) = spread_chunks(image, lanes, &live, meters, region, opts, cancel);
    BulkOutcome {
        live,
        results,
        shared_error,
    }
}

/// Records a pass of phase 2 in its lanes.
pub(super) fn apply_bulk(lanes: &mut [Lane], outcome: BulkOutcome) {
    for (&i, result) in outcome.live.iter().zip(outcome.results) {
        lanes[i].report.bytes_written += result.written;
        if let Some(e) = result.error {
            lanes[i].fail(e);
        }
    }
    if let Some(error) = outcome.shared_error {
        fail_together(lanes, &outcome.live, error);
    }
}

/// Whether `lane` writes `extent` in the `region` pass of phase 2.
fn in_bulk(lane: &Lane, extent: &PlacedExtent, region: Region) -> bool {
    !lane.tables.in_areas(extent)
        && match region {
            Region::Uncompared => !lane.compared.compares(extent.ordinal),
            Region::Compared => {
                lane.compared.compares(extent.ordinal) && !lane.already.contains(extent.ordinal)
            }
        }
}

/// What one target's writer did.
struct WriterResult {
    written: u64,
    error: Option<RestoreError>,
}

/// Runs phase 2's threads; returns each live lane's writer result and the
/// error that stopped them all, if any.
fn spread_chunks(
    image: &Image<File>,
    lanes: &[Lane],
    live: &[usize],
    meters: &[Meter],
    region: Region,
    opts: &RestoreOptions,
    cancel: &CancelToken,
) -> (Vec<WriterResult>, Option<RestoreError>) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk_size = image.manifest().chunk_size as usize;
    // Buffers are counted against a byte budget, two thirds for decoded
    // chunks and one third for stored ones, so 64 MiB chunks on many cores
    // cannot multiply into gigabytes. The targets share the decoded ones.
    let fit = |share: usize, wanted: usize| (share / chunk_size.max(1)).clamp(1, wanted);
    let buffers = fit(BUFFER_BUDGET_BYTES * 2 / 3, threads * 2 + 2).max(2);
    // Stored bytes are read into reused buffers too: allocating and
    // zero-filling a fresh one per chunk costs as much as a core's hashing.
    let stored_buffers = fit(BUFFER_BUDGET_BYTES / 3, threads + 2);
    let (pool_tx, pool_rx) = sync_channel::<AlignedBuf>(buffers);
    let (stored_tx, stored_rx) = sync_channel::<AlignedBuf>(stored_buffers);
    for (pool, count) in [(&pool_tx, buffers), (&stored_tx, stored_buffers)] {
        for _ in 0..count {
            match AlignedBuf::new(chunk_size, IO_ALIGNMENT) {
                Ok(buf) => {
                    let _ = pool.send(buf);
                }
                Err(e) => return (Vec::new(), Some(e.into())),
            }
        }
    }
    let (decode_tx, decode_rx) = sync_channel::<DecodeJob>(threads);
    let (job_tx, job_rx) = sync_channel::<Job>(buffers);
    let decode_rx = Mutex::new(decode_rx);
    let stop = AtomicBool::new(false);
    let failed: Vec<AtomicBool> = live.iter().map(|_| AtomicBool::new(false)).collect();

    std::thread::scope(|scope| {
        let reader_jobs = job_tx.clone();
        let stop = &stop;
        let extents = image
            .extents()
            .filter(|e| live.iter().any(|&i| in_bulk(&lanes[i], e, region)));
        scope.spawn(move || {
            read_stored_chunks(
                image,
                extents,
                opts,
                Pools {
                    buffers: &pool_rx,
                    stored: &stored_rx,
                },
                &decode_tx,
                &reader_jobs,
                stop,
            )
        });
        for _ in 0..threads {
            let jobs = job_tx.clone();
            let stored_return = stored_tx.clone();
            let decode_rx = &decode_rx;
            scope.spawn(move || decode_chunks(decode_rx, &stored_return, &jobs));
        }
        drop(job_tx);

        let mut senders = Vec::with_capacity(live.len());
        let mut writers = Vec::with_capacity(live.len());
        for (slot, &i) in live.iter().enumerate() {
            let (tx, rx) = sync_channel::<TargetJob>(buffers);
            senders.push(tx);
            let (lane, meter, failed) = (&lanes[i], &meters[i], &failed[slot]);
            writers.push(scope.spawn(move || write_target(image, lane, meter, &rx, failed)));
        }

        let mut shared_error = None;
        for job in job_rx {
            if shared_error.is_none() && cancel.is_cancelled() {
                shared_error = Some(RestoreError::Cancelled);
                stop.store(true, Ordering::SeqCst);
            }
            let (extent, chunk) = match job {
                Job::Failed(e) => {
                    stop.store(true, Ordering::SeqCst);
                    shared_error.get_or_insert(e);
                    continue;
                }
                Job::Write { extent, buf, len } => (
                    extent,
                    Some(Arc::new(SharedChunk {
                        buf: Some(buf),
                        len,
                        pool: pool_tx.clone(),
                    })),
                ),
                Job::Zero(extent) => (extent, None),
            };
            if shared_error.is_some() {
                continue;
            }
            for (slot, &i) in live.iter().enumerate() {
                if failed[slot].load(Ordering::SeqCst) || !in_bulk(&lanes[i], &extent, region) {
                    continue;
                }
                let job = match &chunk {
                    Some(chunk) => TargetJob::Write(extent, Arc::clone(chunk)),
                    None => TargetJob::Zero(extent),
                };
                let _ = senders[slot].send(job);
            }
            if failed.iter().all(|f| f.load(Ordering::SeqCst)) {
                stop.store(true, Ordering::SeqCst);
            }
        }
        drop(senders);
        let results = writers
            .into_iter()
            .map(|writer| {
                writer.join().unwrap_or_else(|_| WriterResult {
                    written: 0,
                    error: Some(RestoreError::TargetIo {
                        operation: "write",
                        offset: 0,
                        source: std::io::Error::other("the writer thread panicked"),
                    }),
                })
            })
            .collect();
        (results, shared_error)
    })
}

/// One target's writer in phase 2. After a failed write it only drains
/// its queue, so the chunks it holds go back to the pool.
fn write_target(
    image: &Image<File>,
    lane: &Lane,
    meter: &Meter,
    jobs: &Receiver<TargetJob>,
    failed: &AtomicBool,
) -> WriterResult {
    let sector = u64::from(image.sector_size());
    let mut result = WriterResult {
        written: 0,
        error: None,
    };
    for job in jobs {
        if result.error.is_some() {
            continue;
        }
        let written = match &job {
            TargetJob::Write(extent, chunk) => {
                let bytes = chunk.bytes();
                write_bytes_aligned(&lane.target, bytes, extent.start_sector * sector, "write").map(
                    |()| {
                        meter.add(bytes.len() as u64, 1);
                        bytes.len() as u64
                    },
                )
            }
            TargetJob::Zero(extent) => {
                let discard =
                    extent.kind == ExtentKind::Unmapped && lane.unmapped == Unmapped::Discarded;
                let (offset, len) = (extent.start_sector * sector, extent.sector_count * sector);
                zero_range(&lane.target, offset, len, discard).map(|()| 0)
            }
        };
        match written {
            Ok(n) => result.written += n,
            Err(e) => {
                failed.store(true, Ordering::SeqCst);
                result.error = Some(e);
            }
        }
    }
    result
}

enum Job {
    Write {
        extent: PlacedExtent,
        buf: AlignedBuf,
        len: usize,
    },
    Zero(PlacedExtent),
    Failed(RestoreError),
}

struct DecodeJob {
    extent: PlacedExtent,
    chunk: u32,
    entry: ChunkEntry,
    /// The stored bytes are `stored[..entry.stored_len]`.
    stored: AlignedBuf,
    buf: AlignedBuf,
}

/// A verified chunk shared by the targets' writers; the last one to drop
/// it returns the buffer to the pool.
struct SharedChunk {
    buf: Option<AlignedBuf>,
    len: usize,
    pool: SyncSender<AlignedBuf>,
}

impl SharedChunk {
    fn bytes(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| &b.as_slice()[..self.len])
    }
}

impl Drop for SharedChunk {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // The pool has room for every buffer, so this never blocks;
            // it also wakes a reader waiting to stop.
            let _ = self.pool.send(buf);
        }
    }
}

/// Work for one target's writer.
enum TargetJob {
    Write(PlacedExtent, Arc<SharedChunk>),
    Zero(PlacedExtent),
}

/// The reader's sources of reusable buffers.
struct Pools<'a> {
    /// Aligned buffers for decoded chunks, returned by the writer.
    buffers: &'a Receiver<AlignedBuf>,
    /// Buffers for stored bytes, returned by the decoders.
    stored: &'a Receiver<AlignedBuf>,
}

fn read_stored_chunks(
    image: &Image<File>,
    extents: impl Iterator<Item = PlacedExtent>,
    opts: &RestoreOptions,
    pools: Pools<'_>,
    decode: &SyncSender<DecodeJob>,
    jobs: &SyncSender<Job>,
    stop: &AtomicBool,
) {
    let reader = StoredReader::new(image);
    for extent in extents {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let sent = match extent.kind {
            ExtentKind::Data { chunk } => {
                let Ok(buf) = pools.buffers.recv() else {
                    return;
                };
                let Ok(mut stored) = pools.stored.recv() else {
                    return;
                };
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match reader.read(chunk, &mut stored) {
                    Ok(entry) => decode
                        .send(DecodeJob {
                            extent,
                            chunk,
                            entry,
                            stored,
                            buf,
                        })
                        .is_ok(),
                    Err(e) => jobs.send(Job::Failed(e)).is_ok(),
                }
            }
            ExtentKind::Zero => jobs.send(Job::Zero(extent)).is_ok(),
            ExtentKind::Unmapped if opts.unmapped == Unmapped::Left => true,
            ExtentKind::Unmapped => jobs.send(Job::Zero(extent)).is_ok(),
        };
        if !sent {
            return;
        }
    }
}

/// Reads stored chunks, with O_DIRECT where the image's file system allows
/// it: a cold image on a USB stick is then read in whole-chunk requests
/// without filling, and copying through, the page cache.
struct StoredReader<'a> {
    image: &'a Image<File>,
    /// Over the exact file that was verified.
    file: DirectReader<'a>,
}

impl<'a> StoredReader<'a> {
    fn new(image: &'a Image<File>) -> Self {
        Self {
            image,
            file: DirectReader::new(image.source()),
        }
    }

    /// Reads a chunk's stored bytes into the start of `buf`.
    fn read(&self, chunk: u32, buf: &mut AlignedBuf) -> Result<ChunkEntry, RestoreError> {
        let entry = self.image.chunk_entry(chunk)?;
        let len = entry.stored_len as usize;
        // Chunks start 4096-aligned (the reader checked), so a read rounded
        // up to the alignment stays aligned at both ends.
        let aligned_len = len.div_ceil(IO_ALIGNMENT) * IO_ALIGNMENT;
        let Some(window) = buf.as_mut_slice().get_mut(..aligned_len) else {
            return Err(ImageError::InvalidIndex {
                location: format!("chunk {chunk}"),
                reason: "it is larger than the chunk size".into(),
            }
            .into());
        };
        self.file
            .read_at_least(window, entry.offset, len)
            .map_err(|source| {
                RestoreError::Image(ImageError::Read {
                    section: SectionName::Data,
                    offset: entry.offset,
                    source,
                })
            })?;
        Ok(entry)
    }
}

fn decode_chunks(
    jobs_in: &Mutex<Receiver<DecodeJob>>,
    stored_return: &SyncSender<AlignedBuf>,
    jobs_out: &SyncSender<Job>,
) {
    let mut decoder = ChunkDecoder::new();
    loop {
        let next = match jobs_in.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = next else { return };
        let len = job.entry.raw_len as usize;
        let sectors = (job.extent.start_sector, job.extent.end_sector());
        let stored = &job.stored.as_slice()[..job.entry.stored_len as usize];
        let result = match job.buf.as_mut_slice().get_mut(..len) {
            Some(out) => decoder.decode_into(job.chunk, &job.entry, stored, out, sectors),
            None => Err(reliquary_image::ImageError::InvalidIndex {
                location: format!("chunk {}", job.chunk),
                reason: "it is larger than the chunk size".into(),
            }),
        };
        // The pool has room for every stored buffer, so this never blocks.
        let _ = stored_return.try_send(job.stored);
        let out = match result {
            // Verified: only now may the bytes reach the disk.
            Ok(()) => Job::Write {
                extent: job.extent,
                buf: job.buf,
                len,
            },
            Err(e) => Job::Failed(e.into()),
        };
        if jobs_out.send(out).is_err() {
            return;
        }
    }
}
