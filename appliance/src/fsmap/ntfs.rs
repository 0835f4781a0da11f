//! NTFS, through the `ntfs` crate: `$Bitmap` says which clusters are used.
//! `$MFT`, `$MFTMirr`, `$LogFile` and the boot area are kept whatever the
//! bitmap says; the backup boot sector lies after the last cluster, where
//! no free range reaches. A dirty volume or a hibernated Windows falls back.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::NtfsVolumeFlags;
use ntfs::{KnownNtfsFileRecordNumber, Ntfs, NtfsError, NtfsReadSeek};
use reliquary_image::{FileSystemKind, ReadAt};

use super::{FreeRuns, FreeSpace, FsError, PartitionBytes};

/// `$Bitmap` is read in pieces of this size: memory stays bounded on a big volume.
const BITMAP_PIECE: usize = 1 << 20;
/// The boot area at the start of the volume (`$Boot`, 16 sectors).
const BOOT_AREA: u64 = 8192;
/// First bytes of a `hiberfil.sys` that holds a resume image (any case).
const RESUME_SIGNATURES: [&[u8; 4]; 4] = [b"hibr", b"wake", b"rstr", b"link"];

pub(super) fn free_space<S: ReadAt + ?Sized>(
    bytes: &PartitionBytes<'_, S>,
    free: FreeRuns,
) -> Result<FreeSpace, FsError> {
    let mut fs = Reader {
        bytes,
        position: 0,
        overran: false,
    };
    // The crate panics (`unreachable!`) on some I/O errors inside its
    // parsers; a panic there means an unreadable volume, not a bug here.
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_volume(&mut fs, free)))
            .unwrap_or_else(|_| {
                Err(FsError::Corrupt(
                    "the NTFS reader failed on this volume".into(),
                ))
            });
    if fs.overran {
        return Err(FsError::Corrupt(
            "an NTFS structure lies beyond the partition".into(),
        ));
    }
    result
}

fn read_volume<S: ReadAt + ?Sized>(
    reader: &mut Reader<'_, '_, S>,
    mut free: FreeRuns,
) -> Result<FreeSpace, FsError> {
    let bytes = reader.bytes;
    let mut fs = reader;
    let mut ntfs = Ntfs::new(&mut fs).map_err(damaged)?;
    let serial = ntfs.serial_number();
    let flags = ntfs.volume_info(&mut fs).map_err(damaged)?.flags();
    if flags.contains(NtfsVolumeFlags::IS_DIRTY) {
        return Err(FsError::NotClean("the NTFS dirty flag is set"));
    }
    ntfs.read_upcase_table(&mut fs).map_err(damaged)?;
    if holds_resume_image(&ntfs, &mut fs)? {
        return Err(FsError::NotClean(
            "Windows is hibernated: hiberfil.sys holds a resume image",
        ));
    }

    let cluster = u64::from(ntfs.cluster_size());
    let clusters = ntfs.size() / cluster;
    if clusters * cluster > bytes.len() {
        return Err(FsError::Corrupt(format!(
            "the volume's {} bytes exceed the partition's {} bytes",
            clusters * cluster,
            bytes.len()
        )));
    }
    let bitmap_file = ntfs
        .file(&mut fs, KnownNtfsFileRecordNumber::Bitmap as u64)
        .map_err(damaged)?;
    let item = bitmap_file
        .data(&mut fs, "")
        .ok_or_else(|| FsError::Corrupt("$Bitmap has no data".into()))?
        .map_err(damaged)?;
    let attribute = item.to_attribute().map_err(damaged)?;
    let mut value = attribute.value(&mut fs).map_err(damaged)?;
    if value.len() < clusters.div_ceil(8) {
        return Err(FsError::Corrupt(format!(
            "$Bitmap holds {} bytes, too few for the volume's {clusters} clusters",
            value.len()
        )));
    }

    let mut piece = vec![0u8; BITMAP_PIECE];
    let mut run_start = None;
    let mut lcn = 0u64;
    while lcn < clusters {
        let want = ((clusters - lcn).div_ceil(8) as usize).min(BITMAP_PIECE);
        read_exact(&mut value, &mut fs, &mut piece[..want])?;
        for byte in &piece[..want] {
            for bit in 0..8 {
                if lcn >= clusters {
                    break;
                }
                let used = byte & (1 << bit) != 0;
                match (used, run_start) {
                    (false, None) => run_start = Some(lcn),
                    (true, Some(start)) => {
                        free.push(start * cluster..lcn * cluster);
                        run_start = None;
                    }
                    _ => {}
                }
                lcn += 1;
            }
        }
    }
    if let Some(start) = run_start {
        free.push(start * cluster..clusters * cluster);
    }

    let mut keep = Vec::new();
    keep.push(0..BOOT_AREA);
    for record in [
        KnownNtfsFileRecordNumber::MFT,
        KnownNtfsFileRecordNumber::MFTMirr,
        KnownNtfsFileRecordNumber::LogFile,
    ] {
        keep.extend(data_extents(&ntfs, &mut fs, record as u64)?);
    }
    Ok(FreeSpace {
        kind: FileSystemKind::Ntfs,
        volume_serial: Some(format!(
            "{:04X}-{:04X}",
            (serial >> 16) & 0xffff,
            serial & 0xffff
        )),
        free: subtract(free.into_runs(), &mut keep),
    })
}

/// Whether the root directory's `hiberfil.sys` starts with a resume
/// signature (Windows zeroes it after a normal boot).
fn holds_resume_image<T: Read + Seek>(ntfs: &Ntfs, fs: &mut T) -> Result<bool, FsError> {
    let root = ntfs.root_directory(fs).map_err(damaged)?;
    let index = root.directory_index(fs).map_err(damaged)?;
    let mut finder = index.finder();
    let Some(entry) = NtfsFileNameIndex::find(&mut finder, ntfs, fs, "hiberfil.sys") else {
        return Ok(false);
    };
    let file = entry.map_err(damaged)?.to_file(ntfs, fs).map_err(damaged)?;
    let Some(item) = file.data(fs, "") else {
        return Ok(false);
    };
    let item = item.map_err(damaged)?;
    let attribute = item.to_attribute().map_err(damaged)?;
    let mut value = attribute.value(fs).map_err(damaged)?;
    if value.len() < 4 {
        return Ok(false);
    }
    let mut signature = [0u8; 4];
    read_exact(&mut value, fs, &mut signature)?;
    signature.make_ascii_lowercase();
    Ok(RESUME_SIGNATURES.iter().any(|s| **s == signature))
}

/// The byte ranges that a system file's unnamed `$DATA` occupies.
fn data_extents<T: Read + Seek>(
    ntfs: &Ntfs,
    fs: &mut T,
    record: u64,
) -> Result<Vec<Range<u64>>, FsError> {
    let file = ntfs.file(fs, record).map_err(damaged)?;
    let Some(item) = file.data(fs, "") else {
        return Ok(Vec::new());
    };
    let item = item.map_err(damaged)?;
    let attribute = item.to_attribute().map_err(damaged)?;
    let NtfsAttributeValue::NonResident(value) = attribute.value(fs).map_err(damaged)? else {
        return Ok(Vec::new());
    };
    let mut extents = Vec::new();
    for run in value.data_runs() {
        let run = run.map_err(damaged)?;
        if let Some(start) = run.data_position().value() {
            let start = start.get();
            extents.push(start..start.saturating_add(run.allocated_size()));
        }
    }
    Ok(extents)
}

/// `free` without any byte of `keep`. Both are byte ranges; `free` is sorted.
fn subtract(free: Vec<Range<u64>>, keep: &mut [Range<u64>]) -> Vec<Range<u64>> {
    keep.sort_by_key(|r| r.start);
    let mut out = Vec::with_capacity(free.len());
    for r in free {
        let mut at = r.start;
        for k in keep.iter().filter(|k| k.end > r.start && k.start < r.end) {
            if k.start > at {
                out.push(at..k.start);
            }
            at = at.max(k.end);
        }
        if at < r.end {
            out.push(at..r.end);
        }
    }
    out
}

fn read_exact<V: NtfsReadSeek, T: Read + Seek>(
    value: &mut V,
    fs: &mut T,
    buf: &mut [u8],
) -> Result<(), FsError> {
    let mut done = 0;
    while done < buf.len() {
        let n = value.read(fs, &mut buf[done..]).map_err(damaged)?;
        if n == 0 {
            return Err(FsError::Corrupt("an NTFS attribute ends early".into()));
        }
        done += n;
    }
    Ok(())
}

fn damaged(e: NtfsError) -> FsError {
    FsError::Corrupt(e.to_string())
}

/// `Read + Seek` over the partition, as the `ntfs` crate wants it. Past
/// the end it reads zeros and remembers that it did: the crate panics on a
/// short read inside its parsers, and the caller refuses the volume anyway.
struct Reader<'a, 'b, S: ReadAt + ?Sized> {
    bytes: &'a PartitionBytes<'b, S>,
    position: u64,
    overran: bool,
}

impl<S: ReadAt + ?Sized> Read for Reader<'_, '_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.bytes.len().saturating_sub(self.position);
        let n = (buf.len() as u64).min(left) as usize;
        if n > 0 {
            self.bytes
                .read(&mut buf[..n], self.position)
                .map_err(std::io::Error::other)?;
        }
        if n < buf.len() {
            buf[n..].fill(0);
            self.overran = true;
        }
        self.position = self.position.saturating_add(buf.len() as u64);
        Ok(buf.len())
    }
}

impl<S: ReadAt + ?Sized> Seek for Reader<'_, '_, S> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
            SeekFrom::End(d) => self.bytes.len().checked_add_signed(d),
        };
        self.position = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `ntfs_bitmap` fuzz target: the crate overflows an
    /// addition in `index_record.rs` (a panic with overflow checks on).
    #[test]
    fn a_volume_that_makes_the_crate_panic_is_refused() {
        let compressed = include_bytes!("fixtures/ntfs_index_record_add_overflow.zst");
        let data = zstd::stream::decode_all(&compressed[..]).expect("fixture decompresses");
        let disk = data.clone();
        let bytes = PartitionBytes {
            disk: &disk,
            start: 0,
            len: data.len() as u64,
        };
        // The crate panics inside (tests run with overflow checks); capture
        // gets an error and keeps every sector.
        assert!(matches!(
            free_space(&bytes, FreeRuns::new(0)),
            Err(FsError::Corrupt(_))
        ));
    }

    #[test]
    fn kept_ranges_are_cut_out_of_free_ones() {
        let free = vec![0..100, 200..300, 400..500];
        let mut keep = vec![250..260, 0..10, 450..600];
        assert_eq!(
            subtract(free, &mut keep),
            vec![10..100, 200..250, 260..300, 400..450]
        );
    }
}
