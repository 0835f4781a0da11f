//! Reading a log back: the structural scan shared by `open` (recovery) and
//! `verify`, and the full verification with signatures and checkpoints.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use reliquary_image::keys::PublicKey;

use super::checkpoint::{merkle_root, Checkpoint, MerkleAccumulator};
use super::layout::{
    genesis_hash, read_frame, signature_message, FileHeader, FileSource, Frame, FrameDefect,
    HeaderDefect, Source, FRAME_ALIGN, HEADER_LEN,
};
use super::record::{decode_body, Kind, Payload, Record};
use super::{AuditError, Digest, LOG_FILE};

/// One thing wrong with a log, located precisely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The record's sequence number; `None` for the file header or a
    /// checkpoint mismatch.
    pub seq: Option<u64>,
    /// Byte offset of the frame (0 for the header).
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "record {seq} at offset {}: {}", self.offset, self.reason),
            None if self.offset == 0 => write!(f, "the file header: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// How the file ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LogEnd {
    /// The last frame is complete.
    Clean { offset: u64 },
    /// A partial last frame, from an append cut short. `open` copies it
    /// aside and cuts it off; `verify` reports it as a warning.
    TornTail { offset: u64, len: u64 },
}

/// A record as `verify` saw it.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedRecord {
    pub seq: u64,
    pub offset: u64,
    /// `None` when the body did not decode.
    pub record: Option<Record>,
    pub status: RecordStatus,
    /// A `RestoreStarted` without a `RestoreFinished`.
    pub interrupted: bool,
}

/// Whether a record passed every check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RecordStatus {
    Verified,
    Invalid(String),
}

/// What `verify --checkpoint` concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CheckpointStatus {
    /// The log's first `size` records have the witnessed root.
    Extends {
        size: u64,
    },
    Shorter {
        witnessed: u64,
        actual: u64,
    },
    Forked {
        size: u64,
    },
    WrongOrigin {
        witnessed: String,
        actual: String,
    },
}

/// Problems listed by name in a [`Summary`]; the rest are only counted, so a
/// log of forged frames cannot fill memory with reasons.
pub const MAX_LISTED_PROBLEMS: usize = 100;
/// Warnings listed by name in a [`Summary`]; the rest are only counted.
pub const MAX_LISTED_WARNINGS: usize = 100;
/// Frames read and checked together: bounded by count and by body bytes,
/// so memory stays flat whatever the log's size.
const BATCH_FRAMES: usize = 2048;
const BATCH_BODY_BYTES: usize = 8 << 20;

/// What a streaming verification concluded about the whole log; the
/// records themselves went to the caller one at a time.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub path: PathBuf,
    pub key_id: String,
    /// The checkpoint origin of this log, from its `LogCreated` record.
    pub origin: Option<String>,
    /// The log file's length in bytes.
    pub log_bytes: u64,
    /// Rows handed to the caller: every frame, damaged ones included.
    pub records: u64,
    /// The first [`MAX_LISTED_PROBLEMS`] problems, in file order.
    pub problems: Vec<Problem>,
    pub problem_count: u64,
    /// The first [`MAX_LISTED_WARNINGS`] findings that do not fail verification.
    pub warnings: Vec<String>,
    pub warning_count: u64,
    pub end: LogEnd,
    /// Number of records before the first problem (the checkpoint tree size).
    pub size: u64,
    pub root: Digest,
    pub checkpoint: Option<CheckpointStatus>,
}

impl Summary {
    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.first()
    }

    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    fn add_problem(&mut self, problem: Problem) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(problem);
        }
    }

    fn add_warning(&mut self, warning: String) {
        self.warning_count += 1;
        if self.warnings.len() < MAX_LISTED_WARNINGS {
            self.warnings.push(warning);
        }
    }
}

/// The result of verifying a log, with every record in memory: for the
/// stick's own small log (the TUI, the restore engine). Commands that read
/// a log of any size use [`verify_dir_each`].
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub key_id: String,
    /// The checkpoint origin of this log, from its `LogCreated` record.
    pub origin: Option<String>,
    pub records: Vec<VerifiedRecord>,
    /// Sorted by offset: the first is the first bad record.
    pub problems: Vec<Problem>,
    pub end: LogEnd,
    /// Number of records (the checkpoint tree size).
    pub size: u64,
    pub root: Digest,
    pub checkpoint: Option<CheckpointStatus>,
}

impl Report {
    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.first()
    }

    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Sequence numbers of interrupted restores.
    pub fn interrupted(&self) -> Vec<u64> {
        self.records
            .iter()
            .filter(|r| r.interrupted)
            .map(|r| r.seq)
            .collect()
    }

    /// Findings that do not fail verification.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = end_warning(&self.end).into_iter().collect();
        out.extend(self.records.iter().flat_map(record_warnings));
        out
    }

    /// A report of `records` (all of the log's, or the few a caller kept)
    /// with what the walk concluded about the whole log.
    pub fn from_parts(summary: Summary, records: Vec<VerifiedRecord>) -> Self {
        Self {
            path: summary.path,
            key_id: summary.key_id,
            origin: summary.origin,
            records,
            problems: summary.problems,
            end: summary.end,
            size: summary.size,
            root: summary.root,
            checkpoint: summary.checkpoint,
        }
    }
}

/// The warning a torn tail gives, if the log ends in one.
fn end_warning(end: &LogEnd) -> Option<String> {
    match *end {
        LogEnd::TornTail { offset, len } => Some(format!(
            "the log ends with a torn append of {len} bytes at offset {offset}; it is \
             copied aside and cut off the next time the log is opened for writing"
        )),
        LogEnd::Clean { .. } => None,
    }
}

/// The findings about one record that do not fail verification.
fn record_warnings(r: &VerifiedRecord) -> Vec<String> {
    let mut out = Vec::new();
    let Some(rec) = &r.record else { return out };
    if r.interrupted {
        out.push(format!(
            "record {}: the restore it started is INTERRUPTED (no RestoreFinished)",
            r.seq
        ));
    }
    if rec.meta.time.clock_anomaly {
        out.push(format!(
            "record {}: the clock read {} ms, below the floor {} ms; the floor was recorded",
            r.seq, rec.meta.time.rtc_unix_millis, rec.meta.time.floor_unix_millis
        ));
    }
    if let Payload::Recovered { offset, length, .. } = &rec.payload {
        out.push(format!(
            "record {}: a torn tail of {length} bytes at offset {offset} was recovered",
            r.seq
        ));
    }
    out
}

/// Verifies the log in `dir` against `key`, and against a witnessed
/// checkpoint file when one is given, holding every record in memory.
pub fn verify_dir(
    dir: &Path,
    key: &PublicKey,
    checkpoint: Option<&Path>,
) -> Result<Report, AuditError> {
    let mut records = Vec::new();
    let summary = verify_dir_each(dir, key, checkpoint, &mut |vr| {
        records.push(vr);
        Ok(())
    })?;
    Ok(Report::from_parts(summary, records))
}

/// Verifies the log in `dir` like [`verify_dir`], handing each record to
/// `visit` in file order (damaged frames too, as `Invalid` rows without a
/// body) instead of keeping it: memory stays bounded whatever the log's
/// size. An error from `visit` stops the walk.
pub fn verify_dir_each(
    dir: &Path,
    key: &PublicKey,
    checkpoint: Option<&Path>,
    visit: &mut dyn FnMut(VerifiedRecord) -> std::io::Result<()>,
) -> Result<Summary, AuditError> {
    let witnessed = match checkpoint {
        Some(path) => Some(Checkpoint::read_verified(path, key)?),
        None => None,
    };
    let path = dir.join(LOG_FILE);
    let file = reliquary_image::regular_file::open(&path).map_err(|source| AuditError::Open {
        path: path.clone(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| AuditError::Read {
            path: path.clone(),
            offset: 0,
            source,
        })?
        .len();
    let src = FileSource { file: &file, len };
    verify_source(&src, &path, key, witnessed.as_ref(), visit)
}

/// Verifies a log held in memory. Same checks as [`verify_dir`].
pub fn verify_bytes(
    bytes: &[u8],
    key: &PublicKey,
    witnessed: Option<&Checkpoint>,
) -> Result<Report, AuditError> {
    let mut records = Vec::new();
    let summary = verify_source(bytes, Path::new("<memory>"), key, witnessed, &mut |vr| {
        records.push(vr);
        Ok(())
    })?;
    Ok(Report::from_parts(summary, records))
}

fn verify_source<S: Source + ?Sized>(
    src: &S,
    path: &Path,
    key: &PublicKey,
    witnessed: Option<&Checkpoint>,
    visit: &mut dyn FnMut(VerifiedRecord) -> std::io::Result<()>,
) -> Result<Summary, AuditError> {
    let io_error = |e: ScanError| match e {
        ScanError::Io { offset, source } => AuditError::Read {
            path: path.to_path_buf(),
            offset,
            source,
        },
        ScanError::Header(defect) => AuditError::Header {
            path: path.to_path_buf(),
            defect,
        },
    };
    let mut reader = match FrameReader::new(src) {
        Ok(reader) => reader,
        Err(ScanError::Header(defect)) => return Ok(header_failure(path, key, src, defect)),
        Err(e) => return Err(io_error(e)),
    };
    // A first pass finds which restores finished, so a RestoreStarted row
    // can say INTERRUPTED when it is handed over.
    let finished = finished_restores(reader.clone()).map_err(io_error)?;

    let mut summary = Summary {
        path: path.to_path_buf(),
        key_id: key.key_id(),
        origin: None,
        log_bytes: src.byte_len(),
        records: 0,
        problems: Vec::new(),
        problem_count: 0,
        warnings: Vec::new(),
        warning_count: 0,
        end: LogEnd::Clean { offset: 0 },
        size: 0,
        root: merkle_root(&[]),
        checkpoint: None,
    };
    if reader.header.public_key != *key.as_bytes() {
        summary.add_problem(Problem {
            seq: None,
            offset: 0,
            reason: format!(
                "the header names the appliance key {}, not the key {} given for verification",
                PublicKey::from_bytes(reader.header.public_key)
                    .map(|k| k.key_id())
                    .unwrap_or_else(|_| hex::encode(reader.header.public_key)),
                key.key_id()
            ),
        });
    }
    // The tree covers the records before the first problem; a witnessed
    // checkpoint is compared with the root at its size.
    let mut tree = MerkleAccumulator::default();
    let mut witnessed_root = witnessed.filter(|cp| cp.size == 0).map(|_| tree.root());
    let mut batch: Vec<Scanned> = Vec::new();
    loop {
        let mut body_bytes = 0;
        while batch.len() < BATCH_FRAMES && body_bytes < BATCH_BODY_BYTES {
            match reader.next_item().map_err(io_error)? {
                Some(item) => {
                    if let Scanned::Frame { frame, .. } = &item {
                        body_bytes += frame.body.len();
                    }
                    batch.push(item);
                }
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        let checked = check_batch(key, &batch);
        for (item, (signature_ok, decoded)) in batch.drain(..).zip(checked) {
            let vr = match item {
                Scanned::Damaged {
                    seq,
                    offset,
                    reason,
                } => {
                    summary.add_problem(Problem {
                        seq: Some(seq),
                        offset,
                        reason: reason.clone(),
                    });
                    VerifiedRecord {
                        seq,
                        offset,
                        record: None,
                        status: RecordStatus::Invalid(reason),
                        interrupted: false,
                    }
                }
                Scanned::Frame { frame, problem } => {
                    let mut reasons: Vec<String> = problem.into_iter().collect();
                    if !signature_ok {
                        reasons.push(format!(
                            "its signature does not verify with the appliance key {}",
                            key.key_id()
                        ));
                    }
                    let record = match decoded {
                        Ok(r) => {
                            reasons.extend(semantic_problem(&r, key, frame.preamble.seq));
                            if frame.preamble.seq == 0 {
                                summary.origin = Some(Checkpoint::origin_for(&r.meta.appliance_id));
                            }
                            Some(r)
                        }
                        Err(e) => {
                            reasons.push(e);
                            None
                        }
                    };
                    if let Some(reason) = reasons.first() {
                        summary.add_problem(Problem {
                            seq: Some(frame.preamble.seq),
                            offset: frame.offset,
                            reason: reason.clone(),
                        });
                    }
                    if summary.problem_count == 0 {
                        tree.push(frame.record_hash);
                        if witnessed.is_some_and(|cp| cp.size == tree.size()) {
                            witnessed_root = Some(tree.root());
                        }
                    }
                    let interrupted = record.as_ref().is_some_and(|r| {
                        r.kind == Kind::RestoreStarted && !finished.contains(&r.seq)
                    });
                    VerifiedRecord {
                        seq: frame.preamble.seq,
                        offset: frame.offset,
                        record,
                        status: if reasons.is_empty() {
                            RecordStatus::Verified
                        } else {
                            RecordStatus::Invalid(reasons.join("; "))
                        },
                        interrupted,
                    }
                }
            };
            for warning in record_warnings(&vr) {
                summary.add_warning(warning);
            }
            summary.records += 1;
            visit(vr).map_err(|source| AuditError::Output { source })?;
        }
    }
    summary.end = reader.end.unwrap_or(LogEnd::Clean { offset: 0 });
    if let Some(warning) = end_warning(&summary.end) {
        summary.add_warning(warning);
    }
    summary.size = tree.size();
    summary.root = tree.root();
    if let Some(cp) = witnessed {
        let status = check_against(cp, summary.origin.as_deref(), &summary, witnessed_root);
        if let Some(reason) = status_problem(&status) {
            summary.add_problem(Problem {
                seq: None,
                offset: u64::MAX,
                reason,
            });
        }
        summary.checkpoint = Some(status);
    }
    Ok(summary)
}

/// The `started_seq` of every `RestoreFinished` whose body decodes.
fn finished_restores<S: Source + ?Sized>(
    mut reader: FrameReader<'_, S>,
) -> Result<HashSet<u64>, ScanError> {
    // The discriminant is the stored kind number.
    let finished_kind = Kind::RestoreFinished as u16;
    let mut finished = HashSet::new();
    while let Some(item) = reader.next_item()? {
        if let Scanned::Frame { frame, .. } = item {
            if frame.preamble.kind != finished_kind {
                continue;
            }
            if let Ok(Record {
                payload: Payload::RestoreFinished(f),
                ..
            }) = decode_body(&frame.body, &frame.preamble)
            {
                finished.insert(f.started_seq);
            }
        }
    }
    Ok(finished)
}

/// Each frame's signature verdict and decoded body, in parallel; damaged
/// frames get `(false, Err)` and are not looked at.
fn check_batch(key: &PublicKey, batch: &[Scanned]) -> Vec<(bool, Result<Record, String>)> {
    let frames: Vec<FrameSummary> = batch
        .iter()
        .filter_map(|item| match item {
            Scanned::Frame { frame, .. } => Some(FrameSummary {
                offset: frame.offset,
                len: frame.len,
                seq: frame.preamble.seq,
                record_hash: frame.record_hash,
                signature: frame.signature,
            }),
            Scanned::Damaged { .. } => None,
        })
        .collect();
    let mut signatures = check_signatures(key, &frames).into_iter();
    let decoded: Vec<Option<Result<Record, String>>> = batch
        .par_iter()
        .map(|item| match item {
            Scanned::Frame { frame, .. } => {
                Some(decode_body(&frame.body, &frame.preamble).map_err(|e| e.to_string()))
            }
            Scanned::Damaged { .. } => None,
        })
        .collect();
    decoded
        .into_iter()
        .map(|d| match d {
            Some(d) => (signatures.next().unwrap_or(false), d),
            None => (false, Err(String::new())),
        })
        .collect()
}

fn header_failure<S: Source + ?Sized>(
    path: &Path,
    key: &PublicKey,
    src: &S,
    defect: HeaderDefect,
) -> Summary {
    Summary {
        path: path.to_path_buf(),
        key_id: key.key_id(),
        origin: None,
        log_bytes: src.byte_len(),
        records: 0,
        problems: vec![Problem {
            seq: None,
            offset: 0,
            reason: defect.to_string(),
        }],
        problem_count: 1,
        warnings: Vec::new(),
        warning_count: 0,
        end: LogEnd::Clean { offset: 0 },
        size: 0,
        root: merkle_root(&[]),
        checkpoint: None,
    }
}

/// Checks that a decoded record agrees with its frame and its position.
fn semantic_problem(r: &Record, key: &PublicKey, seq: u64) -> Option<String> {
    match (&r.payload, seq) {
        (Payload::LogCreated { public_key }, 0) if public_key.0 != *key.as_bytes() => {
            Some("the LogCreated record names a different appliance key".into())
        }
        (Payload::LogCreated { .. }, 0) => None,
        (_, 0) => Some("the first record is not LogCreated".into()),
        (Payload::LogCreated { .. }, _) => Some("LogCreated appears after the first record".into()),
        _ => None,
    }
}

/// Compares a witnessed checkpoint with the log: `root_at_size` is the
/// log's root over the checkpoint's number of records, if it has as many
/// valid ones.
fn check_against(
    cp: &Checkpoint,
    origin: Option<&str>,
    log: &Summary,
    root_at_size: Option<Digest>,
) -> CheckpointStatus {
    let actual = origin.unwrap_or("");
    if cp.origin != actual {
        return CheckpointStatus::WrongOrigin {
            witnessed: cp.origin.clone(),
            actual: actual.to_string(),
        };
    }
    match root_at_size {
        None => CheckpointStatus::Shorter {
            witnessed: cp.size,
            actual: log.size,
        },
        Some(root) if root != cp.root => CheckpointStatus::Forked { size: cp.size },
        Some(_) => CheckpointStatus::Extends { size: cp.size },
    }
}

fn status_problem(status: &CheckpointStatus) -> Option<String> {
    match status {
        CheckpointStatus::Extends { .. } => None,
        CheckpointStatus::Shorter { witnessed, actual } => Some(format!(
            "the log is shorter than the witnessed size {witnessed} (it holds {actual} valid records): records were removed from its end"
        )),
        CheckpointStatus::Forked { size } => Some(format!(
            "the log has forked from the witnessed checkpoint: its first {size} records are not the ones witnessed"
        )),
        CheckpointStatus::WrongOrigin { witnessed, actual } => Some(format!(
            "the checkpoint is for log {witnessed:?}, not this log {actual:?}"
        )),
    }
}

/// What a structural scan found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub header: FileHeader,
    pub frames: Vec<FrameSummary>,
    /// Chain breaks and damaged frames that are followed by valid frames.
    pub problems: Vec<Problem>,
    pub end: LogEnd,
}

/// The parts of a frame kept for the whole log.
#[derive(Debug, Clone)]
pub(crate) struct FrameSummary {
    pub offset: u64,
    pub len: u64,
    pub seq: u64,
    pub record_hash: Digest,
    pub signature: [u8; 64],
}

#[derive(Debug)]
pub(crate) enum ScanError {
    Header(HeaderDefect),
    Io { offset: u64, source: std::io::Error },
}

/// Walks the frames: integrity tags, padding, sequence numbers and the hash
/// chain. A bad frame with no valid frame after it is a torn tail; with one
/// after it, damage. `stop_at_damage` ends the scan at the first problem
/// (what `open` needs); otherwise it resynchronises on the next valid frame.
pub(crate) fn scan<S: Source + ?Sized>(
    src: &S,
    stop_at_damage: bool,
    visit: &mut dyn FnMut(&Frame),
) -> Result<Scan, ScanError> {
    let mut reader = FrameReader::new(src)?;
    let mut frames = Vec::new();
    let mut problems = Vec::new();
    while let Some(item) = reader.next_item()? {
        let problem = match item {
            Scanned::Frame { frame, problem } => {
                visit(&frame);
                frames.push(FrameSummary {
                    offset: frame.offset,
                    len: frame.len,
                    seq: frame.preamble.seq,
                    record_hash: frame.record_hash,
                    signature: frame.signature,
                });
                problem.map(|reason| {
                    (
                        frame.preamble.seq,
                        frame.offset,
                        frame.offset + frame.len,
                        reason,
                    )
                })
            }
            Scanned::Damaged {
                seq,
                offset,
                reason,
            } => Some((seq, offset, offset, reason)),
        };
        if let Some((seq, offset, stop, reason)) = problem {
            problems.push(Problem {
                seq: Some(seq),
                offset,
                reason,
            });
            if stop_at_damage {
                return Ok(Scan {
                    header: reader.header,
                    frames,
                    problems,
                    end: LogEnd::Clean { offset: stop },
                });
            }
        }
    }
    Ok(Scan {
        header: reader.header,
        frames,
        problems,
        end: reader.end.unwrap_or(LogEnd::Clean { offset: 0 }),
    })
}

/// One step of a structural walk.
pub(crate) enum Scanned {
    /// A complete frame, with the chain problem it has (a wrong sequence
    /// number or previous-record hash), if any.
    Frame {
        frame: Frame,
        problem: Option<String>,
    },
    /// Bytes that are no frame, with valid frames after them: the record
    /// that should be there is counted as `seq`.
    Damaged {
        seq: u64,
        offset: u64,
        reason: String,
    },
}

/// The frames of a log, one at a time, with the chain checked as they come.
pub(crate) struct FrameReader<'a, S: ?Sized> {
    src: &'a S,
    pub header: FileHeader,
    expected_seq: u64,
    prev: Digest,
    resynced: bool,
    offset: u64,
    scratch: Vec<u8>,
    /// How the file ends, once the walk got there.
    pub end: Option<LogEnd>,
}

impl<S: ?Sized> Clone for FrameReader<'_, S> {
    fn clone(&self) -> Self {
        Self {
            src: self.src,
            header: self.header,
            expected_seq: self.expected_seq,
            prev: self.prev,
            resynced: self.resynced,
            offset: self.offset,
            scratch: Vec::new(),
            end: self.end,
        }
    }
}

impl<'a, S: Source + ?Sized> FrameReader<'a, S> {
    pub fn new(src: &'a S) -> Result<Self, ScanError> {
        let len = src.byte_len();
        let mut block = vec![0u8; FRAME_ALIGN as usize];
        if len < FRAME_ALIGN {
            return Err(ScanError::Header(HeaderDefect::Short));
        }
        src.read_exact_at(&mut block, 0)
            .map_err(|source| ScanError::Io { offset: 0, source })?;
        let header = FileHeader::decode(&block).map_err(ScanError::Header)?;
        let mut header_bytes = [0u8; HEADER_LEN];
        header_bytes.copy_from_slice(&block[..HEADER_LEN]);
        Ok(Self {
            src,
            header,
            expected_seq: 0,
            prev: genesis_hash(&header_bytes),
            resynced: false,
            offset: FRAME_ALIGN,
            scratch: Vec::new(),
            end: None,
        })
    }

    /// The next frame or damaged stretch; `None` at the end of the file or
    /// at a torn tail (then `end` says which).
    pub fn next_item(&mut self) -> Result<Option<Scanned>, ScanError> {
        if self.end.is_some() {
            return Ok(None);
        }
        let len = self.src.byte_len();
        if self.offset >= len {
            self.end = Some(LogEnd::Clean {
                offset: self.offset,
            });
            return Ok(None);
        }
        match read_frame(self.src, self.offset, &mut self.scratch) {
            Ok(frame) => {
                let seq = frame.preamble.seq;
                let problem = if self.resynced {
                    None
                } else if seq != self.expected_seq {
                    Some(format!(
                        "its sequence number is {seq} where {} was expected: a record \
                         is missing, repeated or out of order",
                        self.expected_seq
                    ))
                } else if frame.preamble.prev_hash != self.prev {
                    Some(format!(
                        "its previous-record hash does not match record {}: a record before it \
                         was changed, removed or replaced",
                        self.expected_seq.saturating_sub(1)
                    ))
                } else {
                    None
                };
                self.resynced = false;
                self.expected_seq = seq.wrapping_add(1);
                self.prev = frame.record_hash;
                self.offset += frame.len;
                Ok(Some(Scanned::Frame { frame, problem }))
            }
            Err(FrameDefect::Io(e)) => Err(ScanError::Io {
                offset: self.offset,
                source: std::io::Error::other(e),
            }),
            Err(defect) => match next_valid_frame(self.src, self.offset, &mut self.scratch) {
                None => {
                    self.end = Some(LogEnd::TornTail {
                        offset: self.offset,
                        len: len - self.offset,
                    });
                    Ok(None)
                }
                Some(next) => {
                    let damaged = Scanned::Damaged {
                        seq: self.expected_seq,
                        offset: self.offset,
                        reason: format!(
                            "the frame is damaged ({defect}) and valid records follow it at offset {next}"
                        ),
                    };
                    self.expected_seq = self.expected_seq.wrapping_add(1);
                    self.offset = next;
                    self.resynced = true;
                    Ok(Some(damaged))
                }
            },
        }
    }
}

/// The offset of the first complete frame after `off`, if any.
fn next_valid_frame<S: Source + ?Sized>(src: &S, off: u64, scratch: &mut Vec<u8>) -> Option<u64> {
    let mut p = off + FRAME_ALIGN;
    while p < src.byte_len() {
        if read_frame(src, p, scratch).is_ok() {
            return Some(p);
        }
        p += FRAME_ALIGN;
    }
    None
}

/// How many signatures are checked together.
const SIGNATURE_BATCH: usize = 1024;

/// Checks every frame's signature, in order, with one equation (see
/// `cofactored_verifies`). Batches of
/// `SIGNATURE_BATCH` are several times faster than one by one; a batch that
/// fails is checked again one signature at a time with the same equation (a
/// batch of one), so a signature's verdict never depends on which other
/// signatures share its batch.
fn check_signatures(key: &PublicKey, frames: &[FrameSummary]) -> Vec<bool> {
    // Spread a small batch over every core too.
    let chunk = frames
        .len()
        .div_ceil(rayon::current_num_threads())
        .clamp(64, SIGNATURE_BATCH);
    frames
        .par_chunks(chunk)
        .flat_map_iter(|batch| {
            let messages: Vec<Vec<u8>> = batch
                .iter()
                .map(|f| signature_message(&f.record_hash))
                .collect();
            let signatures: Vec<&[u8; 64]> = batch.iter().map(|f| &f.signature).collect();
            if cofactored_verifies(key, &signatures, &messages) {
                vec![true; batch.len()]
            } else {
                batch
                    .iter()
                    .zip(&messages)
                    .map(|(f, m)| cofactored_verifies(key, &[&f.signature], &[m]))
                    .collect()
            }
        })
        .collect()
}

/// Whether every signature satisfies the one equation the audit log uses:
/// s canonical (< l), R a point encoding that decodes, and
/// [8]([s]B - R - [k]A) = 0 with k = SHA-512(R || A || M) mod l: the
/// cofactored equation of ZIP 215. A batch is checked with random 128-bit weights z_i:
/// [8](sum z_i(s_i B - R_i - k_i A)) = 0, which a set of valid signatures
/// always meets and a set holding an invalid one meets with probability
/// 2^-128. So a signature's verdict does not depend on its batch: the batch
/// of one is the same equation. The key is torsion-free (`PublicKey`
/// refuses any other key).
fn cofactored_verifies<M: AsRef<[u8]>>(
    key: &PublicKey,
    signatures: &[&[u8; 64]],
    messages: &[M],
) -> bool {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    use ring::rand::SecureRandom;

    let Some(public) = CompressedEdwardsY(*key.as_bytes()).decompress() else {
        return false;
    };
    // One draw of 16 random bytes per signature for the whole batch.
    let mut weights = vec![0u8; 16 * signatures.len()];
    if signatures.len() > 1 && ring::rand::SystemRandom::new().fill(&mut weights).is_err() {
        return false;
    }
    let mut b_coefficient = Scalar::ZERO;
    let mut a_coefficient = Scalar::ZERO;
    let mut r_weights = Vec::with_capacity(signatures.len());
    let mut r_points = Vec::with_capacity(signatures.len());
    for ((signature, message), weight) in signatures
        .iter()
        .zip(messages)
        .zip(weights.chunks_exact(16))
    {
        let r_bytes: [u8; 32] = signature[..32].try_into().unwrap_or_default();
        let s_bytes: [u8; 32] = signature[32..].try_into().unwrap_or_default();
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        let Some(r_point) = CompressedEdwardsY(r_bytes).decompress() else {
            return false;
        };
        let mut hash = ring::digest::Context::new(&ring::digest::SHA512);
        hash.update(&r_bytes);
        hash.update(key.as_bytes());
        hash.update(message.as_ref());
        let k_wide: [u8; 64] = hash.finish().as_ref().try_into().unwrap_or([0; 64]);
        let k = Scalar::from_bytes_mod_order_wide(&k_wide);
        let z = if signatures.len() == 1 {
            Scalar::ONE
        } else {
            let mut z = [0u8; 32];
            z[..16].copy_from_slice(weight);
            Scalar::from_bytes_mod_order(z)
        };
        b_coefficient += z * s;
        a_coefficient += z * k;
        r_weights.push(-z);
        r_points.push(r_point);
    }
    let sum = EdwardsPoint::vartime_multiscalar_mul(
        [b_coefficient, -a_coefficient].into_iter().chain(r_weights),
        [curve25519_dalek::constants::ED25519_BASEPOINT_POINT, public]
            .into_iter()
            .chain(r_points),
    );
    sum.mul_by_cofactor().is_identity()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::scalar::{clamp_integer, Scalar};
    use curve25519_dalek::EdwardsPoint;
    use reliquary_image::keys::SigningKey;

    use super::*;

    const SEED: [u8; 32] = [3; 32];

    fn sha512(parts: &[&[u8]]) -> [u8; 64] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
        parts.iter().for_each(|p| ctx.update(p));
        ctx.finish().as_ref().try_into().expect("64 bytes")
    }

    fn signer() -> SigningKey {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&SEED);
        SigningKey::from_pkcs8(&der, Path::new("<test>")).expect("key")
    }

    /// An Ed25519 signature by `SEED` whose R carries a point of order 8:
    /// the cofactored equation accepts it, the cofactorless one refuses it.
    /// Only the holder of the private key can make one.
    fn sign_with_torsioned_r(public: &[u8; 32], message: &[u8]) -> [u8; 64] {
        let h = sha512(&[&SEED]);
        let a = Scalar::from_bytes_mod_order(clamp_integer(h[..32].try_into().expect("32")));
        let r = Scalar::from_bytes_mod_order_wide(&sha512(&[&h[32..], message]));
        let big_r = (EdwardsPoint::mul_base(&r) + EIGHT_TORSION[1]).compress();
        let k = Scalar::from_bytes_mod_order_wide(&sha512(&[&big_r.0, public, message]));
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&big_r.0);
        sig[32..].copy_from_slice(&s.to_bytes());
        sig
    }

    fn frame(seq: u64, signature: [u8; 64]) -> FrameSummary {
        FrameSummary {
            offset: (seq + 1) * FRAME_ALIGN,
            len: FRAME_ALIGN,
            seq,
            record_hash: Digest([seq as u8; 32]),
            signature,
        }
    }

    #[test]
    fn a_signature_is_judged_by_one_equation_whatever_its_batch() {
        let signer = signer();
        let key = signer.public_key();
        let message = |seq: u64| signature_message(&Digest([seq as u8; 32]));
        let good = frame(0, signer.sign(&message(0)));
        let odd = frame(1, sign_with_torsioned_r(key.as_bytes(), &message(1)));
        // Signed over another record's hash: invalid under every equation.
        let bad = frame(2, signer.sign(&message(0)));
        // ring's cofactorless check refuses it: only this module judges
        // record signatures, with one equation.
        assert!(!key.verify(&message(1), &odd.signature));

        let passing = [good.clone(), odd.clone()];
        assert_eq!(check_signatures(&key, &passing), [true, true]);
        // The same signature in a batch that fails, and so is checked one
        // by one, gets the same verdict.
        let failing = [good, odd, bad];
        assert_eq!(check_signatures(&key, &failing), [true, true, false]);
    }
}
