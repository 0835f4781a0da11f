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

/// The largest `$Bitmap` held for the cross-check: 2^30 clusters, a 4 TiB
/// volume of 4 KiB clusters. A bigger volume is kept whole.
const MAX_BITMAP_BYTES: u64 = 128 << 20;
/// `$MFT` is read this many bytes at a time.
const MFT_PIECE: usize = 1 << 20;
/// Update sequence arrays protect every 512 bytes of a record or page.
const SECTOR_STRIDE: usize = 512;
/// The restart area's flag set when the volume was cleanly unmounted.
const RESTART_VOLUME_IS_CLEAN: u16 = 0x2;
/// A restart area's client list that is empty.
const LOGFILE_NO_CLIENT: u16 = 0xffff;
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
    let log_state = check_log_file(&ntfs, &mut fs)?;
    let bitmap = read_bitmap(&ntfs, &mut fs, clusters)?;
    let (records, referenced) = check_data_runs(&ntfs, &mut fs, &bitmap, clusters)?;

    let mut run_start = None;
    for lcn in 0..clusters {
        let used = bit(&bitmap, lcn);
        match (used, run_start) {
            (false, None) => run_start = Some(lcn),
            (true, Some(start)) => {
                free.push(start * cluster..lcn * cluster);
                run_start = None;
            }
            _ => {}
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
        proof: vec![
            log_state.to_string(),
            format!(
                "the data runs of {records} MFT records in use ({referenced} clusters) \
                 all lie in clusters $Bitmap marks used"
            ),
        ],
        kind: FileSystemKind::Ntfs,
        volume_serial: Some(format!(
            "{:04X}-{:04X}",
            (serial >> 16) & 0xffff,
            serial & 0xffff
        )),
        free: subtract(free.into_runs(), &mut keep),
    })
}

/// Reads `$Bitmap` whole (bounded by [`MAX_BITMAP_BYTES`]): the data-run
/// cross-check looks clusters up in any order.
fn read_bitmap<T: Read + Seek>(ntfs: &Ntfs, fs: &mut T, clusters: u64) -> Result<Vec<u8>, FsError> {
    let bitmap_file = ntfs
        .file(fs, KnownNtfsFileRecordNumber::Bitmap as u64)
        .map_err(damaged)?;
    let item = bitmap_file
        .data(fs, "")
        .ok_or_else(|| FsError::Corrupt("$Bitmap has no data".into()))?
        .map_err(damaged)?;
    let attribute = item.to_attribute().map_err(damaged)?;
    let mut value = attribute.value(fs).map_err(damaged)?;
    let needed = clusters.div_ceil(8);
    if value.len() < needed {
        return Err(FsError::Corrupt(format!(
            "$Bitmap holds {} bytes, too few for the volume's {clusters} clusters",
            value.len()
        )));
    }
    if needed > MAX_BITMAP_BYTES {
        return Err(FsError::Unsupported(format!(
            "a $Bitmap of {needed} bytes, more than the {MAX_BITMAP_BYTES} its cross-check may hold"
        )));
    }
    let mut bitmap = vec![0u8; needed as usize];
    read_exact(&mut value, fs, &mut bitmap)?;
    Ok(bitmap)
}

fn bit(bitmap: &[u8], n: u64) -> bool {
    bitmap[(n / 8) as usize] & (1 << (n % 8)) != 0
}

/// What the `$LogFile` restart areas say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogState {
    /// All bytes 0xff, as mkntfs and ntfs-3g leave it: nothing to replay.
    Empty,
    /// The current restart area says the volume was cleanly unmounted.
    Clean { lsn: u64 },
}

impl std::fmt::Display for LogState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogState::Empty => write!(f, "$LogFile is empty: nothing to replay"),
            LogState::Clean { lsn } => {
                write!(f, "$LogFile's current restart area (LSN {lsn}) says clean")
            }
        }
    }
}

/// Refuses a volume whose `$LogFile` holds operations not yet replayed:
/// Windows does not set the dirty flag on a power cut, and until the log
/// is replayed `$Bitmap` may lack allocations the log holds.
fn check_log_file<T: Read + Seek>(ntfs: &Ntfs, fs: &mut T) -> Result<LogState, FsError> {
    let file = ntfs
        .file(fs, KnownNtfsFileRecordNumber::LogFile as u64)
        .map_err(damaged)?;
    let item = file
        .data(fs, "")
        .ok_or_else(|| FsError::Corrupt("$LogFile has no data".into()))?
        .map_err(damaged)?;
    let attribute = item.to_attribute().map_err(damaged)?;
    let mut value = attribute.value(fs).map_err(damaged)?;
    // Two restart pages of the system page size (4 KiB on every Windows
    // NTFS; at most 64 KiB here), read as 64 KiB or the whole log.
    let len = value.len().min(2 * RESTART_PAGE_MAX as u64) as usize;
    let mut head = vec![0u8; len];
    read_exact(&mut value, fs, &mut head)?;
    log_state(&head)
}

/// The largest restart page (system page size) read.
const RESTART_PAGE_MAX: usize = 64 << 10;

/// The state of a `$LogFile` from its first bytes (both restart pages):
/// the restart page with the higher LSN is current, as for Windows and
/// ntfs-3g; a log client in use without the clean flag means the volume
/// was not cleanly unmounted.
fn log_state(head: &[u8]) -> Result<LogState, FsError> {
    let first = restart_page(head, 0)?;
    let second = match first {
        Some(ref page) => restart_page(head, page.system_page_size)?,
        // Without a first page, look for the second at the usual 4 KiB.
        None => restart_page(head, 4096)?,
    };
    let current = match (first, second) {
        (Some(a), Some(b)) => {
            if b.lsn > a.lsn {
                b
            } else {
                a
            }
        }
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => {
            return if head.len() >= 4 && head[..4] == [0xff; 4] {
                Ok(LogState::Empty)
            } else {
                Err(FsError::Corrupt(
                    "$LogFile holds neither a restart page nor the empty pattern".into(),
                ))
            };
        }
    };
    if current.client_in_use && !current.clean_flag {
        return Err(FsError::NotClean(
            "$LogFile's restart area has a log client in use and no clean flag: \
             Windows did not finish (a power cut or crash), and $Bitmap may lack \
             allocations only the log holds",
        ));
    }
    Ok(LogState::Clean { lsn: current.lsn })
}

struct RestartPage {
    system_page_size: usize,
    lsn: u64,
    client_in_use: bool,
    clean_flag: bool,
}

/// The restart page at `at` of `head`; `None` where the page is empty
/// (0xff) or lies beyond the bytes read. Every field read lies in the
/// page's first sector before its update sequence word, where no fixup
/// applies.
fn restart_page(head: &[u8], at: usize) -> Result<Option<RestartPage>, FsError> {
    let Some(page) = head.get(at..).filter(|p| p.len() >= SECTOR_STRIDE) else {
        return Ok(None);
    };
    let magic = &page[..4];
    if magic == [0xff; 4] {
        return Ok(None);
    }
    let chkdsk = magic == b"CHKD";
    if magic != b"RSTR" && !chkdsk {
        return Err(FsError::Corrupt(format!(
            "$LogFile's restart page at byte {at} has no RSTR signature"
        )));
    }
    let corrupt = |what: &str| {
        Err(FsError::Corrupt(format!(
            "$LogFile's restart page at byte {at}: {what}"
        )))
    };
    let system_page_size = le_u32(page, 16) as usize;
    let log_page_size = le_u32(page, 20) as usize;
    let sizes_valid = |n: usize| n >= SECTOR_STRIDE && n.is_power_of_two();
    if !sizes_valid(system_page_size) || !sizes_valid(log_page_size) {
        return corrupt("its page sizes are invalid");
    }
    if system_page_size > RESTART_PAGE_MAX {
        return Err(FsError::Unsupported(format!(
            "a $LogFile system page of {system_page_size} bytes"
        )));
    }
    if at != 0 && at != system_page_size {
        return Ok(None);
    }
    let area = usize::from(le_u16(page, 24));
    // The restart area's fields up to the client array offset (24 bytes)
    // lie before the first protected word.
    if area % 8 != 0 || area < 30 || area + 24 > SECTOR_STRIDE - 2 {
        return corrupt("its restart area offset is invalid");
    }
    let log_clients = le_u16(page, area + 8);
    let in_use_list = le_u16(page, area + 12);
    if in_use_list != LOGFILE_NO_CLIENT && in_use_list >= log_clients {
        return corrupt("its in-use client list points past the client array");
    }
    let lsn = if chkdsk {
        le_u64(page, 8)
    } else {
        le_u64(page, area)
    };
    Ok(Some(RestartPage {
        system_page_size,
        lsn,
        client_in_use: in_use_list != LOGFILE_NO_CLIENT,
        clean_flag: le_u16(page, area + 14) & RESTART_VOLUME_IS_CLEAN != 0,
    }))
}

/// Reads every MFT record in use and checks that every cluster any of
/// its non-resident attributes (data, indexes, attribute lists, bitmaps,
/// reparse data, of system and user files alike, extension records
/// included) references is marked used in `bitmap`. One pass over
/// `$MFT` in [`MFT_PIECE`] reads: time grows with the records, memory
/// does not. Returns the records in use and the clusters they reference.
fn check_data_runs<T: Read + Seek>(
    ntfs: &Ntfs,
    fs: &mut T,
    bitmap: &[u8],
    clusters: u64,
) -> Result<(u64, u64), FsError> {
    let record_size = ntfs.file_record_size() as usize;
    if !(SECTOR_STRIDE..=MFT_PIECE).contains(&record_size) || !record_size.is_power_of_two() {
        return Err(FsError::Corrupt(format!(
            "an MFT record size of {record_size} bytes"
        )));
    }
    let mft = ntfs
        .file(fs, KnownNtfsFileRecordNumber::MFT as u64)
        .map_err(damaged)?;
    let item = mft
        .data(fs, "")
        .ok_or_else(|| FsError::Corrupt("$MFT has no data".into()))?
        .map_err(damaged)?;
    let attribute = item.to_attribute().map_err(damaged)?;
    let mut value = attribute.value(fs).map_err(damaged)?;
    let records = value.len() / record_size as u64;
    let mut piece = vec![0u8; MFT_PIECE];
    let (mut in_use, mut referenced) = (0u64, 0u64);
    let mut number = 0u64;
    while number < records {
        let count = ((records - number) as usize).min(MFT_PIECE / record_size);
        let piece = &mut piece[..count * record_size];
        read_exact(&mut value, fs, piece)?;
        for record in piece.chunks_exact_mut(record_size) {
            if let Some(n) = record_clusters(record, number, bitmap, clusters)? {
                in_use += 1;
                referenced += n;
            }
            number += 1;
        }
    }
    Ok((in_use, referenced))
}

/// Checks one MFT record (numbered `number`): every cluster its
/// non-resident attributes reference must be set in `bitmap`. Returns the
/// clusters referenced, or `None` for a record not in use.
fn record_clusters(
    record: &mut [u8],
    number: u64,
    bitmap: &[u8],
    clusters: u64,
) -> Result<Option<u64>, FsError> {
    let corrupt = |what: String| Err(FsError::Corrupt(format!("MFT record {number} {what}")));
    match &record[..4] {
        b"FILE" => {}
        // Never used: mkntfs and Windows leave records past the ones they
        // formatted zeroed.
        [0, 0, 0, 0] => return Ok(None),
        _ => return corrupt("is neither a file record nor unused".into()),
    }
    const IN_USE: u16 = 0x1;
    if le_u16(record, 22) & IN_USE == 0 {
        return Ok(None);
    }
    if let Err(what) = apply_fixups(record) {
        return corrupt(what);
    }
    let used = (le_u32(record, 24) as usize).min(record.len());
    let mut at = usize::from(le_u16(record, 20));
    let mut total = 0u64;
    loop {
        if at + 8 > used {
            return corrupt("has attributes running past its end".into());
        }
        let kind = le_u32(record, at);
        if kind == 0xffff_ffff {
            break;
        }
        let len = le_u32(record, at + 4) as usize;
        if len < 24 || len % 8 != 0 || at + len > used {
            return corrupt(format!("has an attribute of invalid length {len}"));
        }
        let attribute = &record[at..at + len];
        if attribute[8] != 0 {
            if len < 64 {
                return corrupt("has a non-resident attribute header cut short".into());
            }
            let runs_at = usize::from(le_u16(attribute, 32));
            if runs_at >= len {
                return corrupt("has mapping pairs outside its attribute".into());
            }
            total += check_runs(&attribute[runs_at..], bitmap, clusters).map_err(|what| {
                FsError::MapContradicted(format!(
                    "{what}, referenced by attribute {kind:#x} of MFT record {number}{}",
                    file_name(record)
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                ))
            })?;
        }
        at += len;
    }
    Ok(Some(total))
}

/// Undoes the update sequence of a multi-sector record in place: the last
/// two bytes of every 512 must be the sequence number and get their saved
/// value back. A mismatch is a torn write.
fn apply_fixups(record: &mut [u8]) -> Result<(), String> {
    let usa_at = usize::from(le_u16(record, 4));
    let usa_count = usize::from(le_u16(record, 6));
    let sectors = record.len() / SECTOR_STRIDE;
    if usa_count != sectors + 1 || usa_at + 2 * usa_count > SECTOR_STRIDE - 2 {
        return Err("has an invalid update sequence array".into());
    }
    let sequence = [record[usa_at], record[usa_at + 1]];
    for sector in 0..sectors {
        let end = (sector + 1) * SECTOR_STRIDE - 2;
        if record[end..end + 2] != sequence {
            return Err(format!("is torn (sector {sector} was not written with it)"));
        }
        let saved = usa_at + 2 * (sector + 1);
        record[end] = record[saved];
        record[end + 1] = record[saved + 1];
    }
    Ok(())
}

/// Walks the mapping pairs of one non-resident attribute; every cluster of
/// every run that is not sparse must be set in `bitmap`. Returns the
/// clusters referenced.
fn check_runs(pairs: &[u8], bitmap: &[u8], clusters: u64) -> Result<u64, String> {
    let mut at = 0;
    let mut lcn = 0i64;
    let mut total = 0u64;
    while let Some(&header) = pairs.get(at) {
        if header == 0 {
            return Ok(total);
        }
        let (len_bytes, offset_bytes) = (usize::from(header & 0xf), usize::from(header >> 4));
        if len_bytes == 0 || len_bytes > 8 || offset_bytes > 8 {
            return Err(format!("a data run header {header:#04x}"));
        }
        let Some(fields) = pairs.get(at + 1..at + 1 + len_bytes + offset_bytes) else {
            return Err("a data run cut short".into());
        };
        let length = le_uint(&fields[..len_bytes]);
        at += 1 + len_bytes + offset_bytes;
        if offset_bytes == 0 {
            continue; // sparse: no clusters
        }
        let delta = le_int(&fields[len_bytes..]);
        lcn = lcn
            .checked_add(delta)
            .ok_or_else(|| "a data run offset overflows".to_string())?;
        let start = u64::try_from(lcn).map_err(|_| format!("a data run at cluster {lcn}"))?;
        match start.checked_add(length) {
            Some(end) if end <= clusters => {}
            _ => {
                return Err(format!(
                    "a run of {length} clusters at cluster {start}, beyond the volume's {clusters}"
                ))
            }
        }
        if let Some(free) = (start..start + length).find(|&c| !bit(bitmap, c)) {
            return Err(format!("cluster {free}, which $Bitmap marks free"));
        }
        total += length;
    }
    Err("mapping pairs without an end".into())
}

/// The record's first `$FILE_NAME` (resident by definition), if any.
fn file_name(record: &[u8]) -> Option<String> {
    let used = (le_u32(record, 24) as usize).min(record.len());
    let mut at = usize::from(le_u16(record, 20));
    while at + 24 <= used {
        let kind = le_u32(record, at);
        let len = le_u32(record, at + 4) as usize;
        if kind == 0xffff_ffff || len < 24 || at + len > used {
            return None;
        }
        if kind == 0x30 && record[at + 8] == 0 {
            let value = at + usize::from(le_u16(record, at + 20));
            let chars = usize::from(*record.get(value + 64)?);
            let name = record.get(value + 66..value + 66 + 2 * chars)?;
            let units: Vec<u16> = name
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            return Some(String::from_utf16_lossy(&units));
        }
        at += len;
    }
    None
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// A little-endian unsigned integer of up to 8 bytes.
fn le_uint(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0, |n, &byte| (n << 8) | u64::from(byte))
}

/// A little-endian signed integer of 1 to 8 bytes, sign-extended.
fn le_int(b: &[u8]) -> i64 {
    let shift = 64 - 8 * b.len() as u32;
    ((le_uint(b) << shift) as i64) >> shift
}

/// Runs the `$LogFile` and MFT record parsers over arbitrary bytes (for
/// the `ntfs_records` fuzz target): the restart pages from the start, and
/// every 1 KiB as a record, against a bitmap with every cluster used (so
/// runs are followed to their end) and one with none.
pub(super) fn fuzz_records(data: &[u8]) {
    let _ = log_state(&data[..data.len().min(2 * RESTART_PAGE_MAX)]);
    let all_used = vec![0xffu8; 1 << 12];
    let none_used = vec![0u8; 1 << 12];
    for bitmap in [&all_used, &none_used] {
        for (n, chunk) in data.chunks_exact(1024).enumerate() {
            let mut record = chunk.to_vec();
            let _ = record_clusters(&mut record, n as u64, bitmap, 1 << 15);
        }
    }
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
