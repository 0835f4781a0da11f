//! File-system allocation maps: which byte ranges of a partition its file
//! system marks free, so capture can record them as `Unmapped` instead of
//! storing stale bytes.
//!
//! Only allocation metadata is read (superblocks, group descriptors,
//! bitmaps, the FAT), never file data. Every parser reads untrusted bytes:
//! lengths and counts are checked before use and allocations are bounded.
//! Anything unexpected is an error, and the caller keeps every sector of
//! that partition: a free range that was really used would lose data, a
//! used range that was really free only costs space.

mod ext;
mod fat;
mod ntfs;

use std::ops::Range;

use reliquary_image::{CaptureMode, FileSystemKind, PartitionCapture, PartitionTable, ReadAt};

/// Free runs shorter than this are kept as data: they save little and
/// would bloat the index on a fragmented volume. Capture asks for longer
/// ones on larger disks (its `min_hole_bytes`).
pub const MIN_UNMAPPED_BYTES: u64 = 64 << 10;

/// How one partition will be captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    pub record: PartitionCapture,
    /// Free byte ranges of the disk (absolute offsets), sorted, disjoint,
    /// each at least [`MIN_UNMAPPED_BYTES`] (more on a large disk) and
    /// sector-aligned.
    pub free: Vec<Range<u64>>,
}

/// Why a recognised file system's free space cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot read the file system at partition byte {offset}: {source}")]
    Read { offset: u64, source: std::io::Error },
    #[error("the volume was not cleanly unmounted ({0})")]
    NotClean(&'static str),
    #[error("the file system is damaged: {0}")]
    Corrupt(String),
    #[error("the allocation map cannot be trusted: {0}")]
    MapContradicted(String),
    #[error("the file system uses {0}, which this capture does not read")]
    Unsupported(String),
}

/// What a file-system parser found: its kind, serial and free ranges in
/// bytes from the start of the partition (sorted, disjoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeSpace {
    pub kind: FileSystemKind,
    pub volume_serial: Option<String>,
    pub free: Vec<Range<u64>>,
    /// The cross-checks that held, in plain words with their counts: why
    /// the free ranges can be trusted.
    pub proof: Vec<String>,
}

/// A partition's bytes, read through its offset and bounded by its length.
struct PartitionBytes<'a, S: ReadAt + ?Sized> {
    disk: &'a S,
    start: u64,
    len: u64,
}

impl<S: ReadAt + ?Sized> PartitionBytes<'_, S> {
    fn len(&self) -> u64 {
        self.len
    }

    /// Reads `buf.len()` bytes at `offset` from the partition start.
    fn read(&self, buf: &mut [u8], offset: u64) -> Result<(), FsError> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len) {
            return Err(FsError::Corrupt(format!(
                "a structure at byte {offset} reaches past the partition's {} bytes",
                self.len
            )));
        }
        self.disk
            .read_exact_at(buf, self.start + offset)
            .map_err(|source| FsError::Read { offset, source })
    }
}

/// Plans the capture of every partition of `table`, keeping free runs of
/// at least `min_free_run` bytes (never less than [`MIN_UNMAPPED_BYTES`]).
/// With `all_sectors`, every partition keeps every sector, as asked.
pub fn plan_partitions<S: ReadAt + ?Sized>(
    disk: &S,
    disk_bytes: u64,
    table: &PartitionTable,
    sector_size: u32,
    all_sectors: bool,
    min_free_run: u64,
) -> Vec<PartitionPlan> {
    let min_run = MIN_UNMAPPED_BYTES.max(min_free_run);
    table
        .partitions
        .iter()
        .map(|p| {
            let sector = u64::from(sector_size);
            let start = p.start_sector.saturating_mul(sector);
            let len = p
                .sector_count
                .saturating_mul(sector)
                .min(disk_bytes.saturating_sub(start));
            let bytes = PartitionBytes { disk, start, len };
            let mut record = PartitionCapture {
                partition_number: p.number,
                file_system: None,
                volume_serial: None,
                mode: CaptureMode::AllSectors,
                fallback_reason: None,
                proof: Vec::new(),
            };
            let Some(kind) = identify(&bytes) else {
                return PartitionPlan {
                    record,
                    free: Vec::new(),
                };
            };
            record.file_system = Some(kind);
            if all_sectors {
                record.fallback_reason = Some("--all-sectors was given".into());
                return PartitionPlan {
                    record,
                    free: Vec::new(),
                };
            }
            match free_space(&bytes, kind, min_run) {
                Ok(found) => {
                    record.file_system = Some(found.kind);
                    record.volume_serial = found.volume_serial;
                    record.mode = CaptureMode::UsedClusters;
                    record.proof = found.proof;
                    PartitionPlan {
                        record,
                        free: absolute_runs(&found.free, start, len, sector, min_run),
                    }
                }
                Err(e) => {
                    record.fallback_reason = Some(e.to_string());
                    PartitionPlan {
                        record,
                        free: Vec::new(),
                    }
                }
            }
        })
        .collect()
}

/// Which file system a partition holds, from its first sectors alone.
fn identify<S: ReadAt + ?Sized>(bytes: &PartitionBytes<'_, S>) -> Option<FileSystemKind> {
    let mut head = vec![0u8; 2048];
    if bytes.len() < head.len() as u64 || bytes.read(&mut head, 0).is_err() {
        return None;
    }
    if &head[3..11] == b"NTFS    " {
        return Some(FileSystemKind::Ntfs);
    }
    if ext::is_ext(&head) {
        return Some(ext::kind_of(&head[1024..]));
    }
    fat::identify(&head)
}

/// The free runs of at least `min_run` bytes that the file system of
/// `kind` records in `bytes`.
fn free_space<S: ReadAt + ?Sized>(
    bytes: &PartitionBytes<'_, S>,
    kind: FileSystemKind,
    min_run: u64,
) -> Result<FreeSpace, FsError> {
    let free = FreeRuns::new(min_run);
    match kind {
        FileSystemKind::Ext2 | FileSystemKind::Ext3 | FileSystemKind::Ext4 => {
            ext::free_space(bytes, free)
        }
        FileSystemKind::Fat12 | FileSystemKind::Fat16 | FileSystemKind::Fat32 => {
            fat::free_space(bytes, free)
        }
        FileSystemKind::Ntfs => ntfs::free_space(bytes, free),
    }
}

/// Keeps the runs worth unmapping (at least `min_run` bytes), shrunk to
/// whole sectors inside the partition, as absolute disk offsets.
fn absolute_runs(
    free: &[Range<u64>],
    start: u64,
    len: u64,
    sector: u64,
    min_run: u64,
) -> Vec<Range<u64>> {
    free.iter()
        .filter_map(|r| {
            let begin = r.start.div_ceil(sector) * sector;
            let end = (r.end.min(len) / sector) * sector;
            (end > begin && end - begin >= min_run).then(|| start + begin..start + end)
        })
        .collect()
}

/// Free runs as a parser finds them, in order. Runs shorter than the
/// capture would unmap are dropped as soon as they are complete, so
/// however a volume's free space alternates, the list holds at most one
/// run per `min_len` bytes of the partition.
struct FreeRuns {
    runs: Vec<Range<u64>>,
    min_len: u64,
}

impl FreeRuns {
    fn new(min_len: u64) -> Self {
        Self {
            runs: Vec::new(),
            min_len,
        }
    }

    /// Appends `range`, which starts at or after the end of every run so
    /// far, merging it with the last run when they touch.
    fn push(&mut self, range: Range<u64>) {
        match self.runs.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            Some(last) if last.end - last.start < self.min_len => *last = range,
            _ => self.runs.push(range),
        }
    }

    fn into_runs(mut self) -> Vec<Range<u64>> {
        if self
            .runs
            .last()
            .is_some_and(|last| last.end - last.start < self.min_len)
        {
            self.runs.pop();
        }
        self.runs
    }
}

/// Runs a file-system parser over arbitrary bytes taken as a partition
/// (for the fuzz targets).
pub fn fuzz_free_space(data: &[u8], kind: FileSystemKind) {
    let disk = data.to_vec();
    let bytes = PartitionBytes {
        disk: &disk,
        start: 0,
        len: data.len() as u64,
    };
    let _ = free_space(&bytes, kind, MIN_UNMAPPED_BYTES);
}

/// The NTFS `$LogFile` and MFT record parsers over arbitrary bytes.
pub fn fuzz_ntfs_records(data: &[u8]) {
    ntfs::fuzz_records(data);
}

/// The FAT chain walker over arbitrary bytes taken as a FAT.
pub fn fuzz_fat_chains(data: &[u8]) {
    fat::fuzz_chains(data);
}

/// The ext inode walker over arbitrary bytes taken as inodes and blocks.
pub fn fuzz_ext_inodes(data: &[u8]) {
    ext::fuzz_inodes(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_runs_merge_and_drop_short_ones_once_complete() {
        let mut free = FreeRuns::new(100);
        for range in [
            0..50,
            50..120,
            130..140,
            150..160,
            160..170,
            200..400,
            500..550,
        ] {
            free.push(range);
        }
        assert_eq!(free.into_runs(), vec![0..120, 200..400]);
    }

    #[test]
    fn short_runs_are_dropped_and_runs_shrink_to_whole_sectors() {
        let free = vec![100..70_000, 80_000..90_000, 200_000..400_000];
        assert_eq!(
            absolute_runs(&free, 1 << 20, 300_000, 512, MIN_UNMAPPED_BYTES),
            vec![
                (1 << 20) + 512..(1 << 20) + 69_632,
                (1 << 20) + 200_192..(1 << 20) + 299_520
            ]
        );
    }
}
