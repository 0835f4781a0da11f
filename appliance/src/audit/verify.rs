//! Reading a log back: the structural scan shared by `open` (recovery) and
//! `verify`, and the full verification with signatures and checkpoints.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use reliquary_image::keys::PublicKey;

use super::checkpoint::{merkle_root, Checkpoint};
use super::layout::{
    genesis_hash, read_frame, signature_message, BodyPreamble, FileHeader, FileSource, Frame,
    FrameDefect, HeaderDefect, Source, FRAME_ALIGN, HEADER_LEN,
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

/// The result of verifying a log.
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
        let mut out = Vec::new();
        if let LogEnd::TornTail { offset, len } = self.end {
            out.push(format!(
                "the log ends with a torn append of {len} bytes at offset {offset}; it is \
                 copied aside and cut off the next time the log is opened for writing"
            ));
        }
        for r in &self.records {
            let Some(rec) = &r.record else { continue };
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
        }
        out
    }
}

/// Verifies the log in `dir` against `key`, and against a witnessed
/// checkpoint file when one is given.
pub fn verify_dir(
    dir: &Path,
    key: &PublicKey,
    checkpoint: Option<&Path>,
) -> Result<Report, AuditError> {
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
    verify_source(&src, &path, key, witnessed.as_ref())
}

/// Verifies a log held in memory. Same checks as [`verify_dir`].
pub fn verify_bytes(
    bytes: &[u8],
    key: &PublicKey,
    witnessed: Option<&Checkpoint>,
) -> Result<Report, AuditError> {
    verify_source(bytes, Path::new("<memory>"), key, witnessed)
}

fn verify_source<S: Source + ?Sized>(
    src: &S,
    path: &Path,
    key: &PublicKey,
    witnessed: Option<&Checkpoint>,
) -> Result<Report, AuditError> {
    let mut bodies: Vec<(Vec<u8>, BodyPreamble)> = Vec::new();
    let scan = match scan(src, false, &mut |f: &Frame| {
        bodies.push((f.body.clone(), f.preamble));
    }) {
        Ok(scan) => scan,
        Err(ScanError::Header(defect)) => {
            return Ok(header_failure(path, key, defect));
        }
        Err(ScanError::Io { offset, source }) => {
            return Err(AuditError::Read {
                path: path.to_path_buf(),
                offset,
                source,
            })
        }
    };
    let mut problems = scan.problems.clone();
    if scan.header.public_key != *key.as_bytes() {
        problems.push(Problem {
            seq: None,
            offset: 0,
            reason: format!(
                "the header names the appliance key {}, not the key {} given for verification",
                PublicKey::from_bytes(scan.header.public_key)
                    .map(|k| k.key_id())
                    .unwrap_or_else(|_| hex::encode(scan.header.public_key)),
                key.key_id()
            ),
        });
    }
    // Signatures dominate the cost; records are independent, so check and
    // decode them in parallel.
    let signatures_ok = check_signatures(key, &scan.frames);
    let checked: Vec<(bool, Result<Record, String>)> = signatures_ok
        .into_par_iter()
        .zip(bodies.par_iter())
        .map(|(ok, (body, preamble))| (ok, decode_body(body, preamble).map_err(|e| e.to_string())))
        .collect();
    drop(bodies);
    let finished: HashSet<u64> = checked
        .iter()
        .filter_map(|(_, r)| match r {
            Ok(Record {
                payload: Payload::RestoreFinished(f),
                ..
            }) => Some(f.started_seq),
            _ => None,
        })
        .collect();
    let mut origin = None;
    let mut records = Vec::with_capacity(scan.frames.len());
    for (frame, (ok, rec)) in scan.frames.iter().zip(checked) {
        let scan_problem = scan.problems.iter().find(|p| p.offset == frame.offset);
        let mut reasons: Vec<String> = scan_problem.map(|p| p.reason.clone()).into_iter().collect();
        let mut fresh = Vec::new();
        if !ok {
            fresh.push(format!(
                "its signature does not verify with the appliance key {}",
                key.key_id()
            ));
        }
        let record = match rec {
            Ok(r) => {
                fresh.extend(semantic_problem(&r, key, frame.seq));
                if r.seq == 0 {
                    origin = Some(Checkpoint::origin_for(&r.meta.appliance_id));
                }
                Some(r)
            }
            Err(e) => {
                fresh.push(e);
                None
            }
        };
        if let (None, Some(reason)) = (scan_problem, fresh.first()) {
            problems.push(Problem {
                seq: Some(frame.seq),
                offset: frame.offset,
                reason: reason.clone(),
            });
        }
        reasons.extend(fresh);
        let interrupted = record
            .as_ref()
            .is_some_and(|r| r.kind == Kind::RestoreStarted && !finished.contains(&r.seq));
        records.push(VerifiedRecord {
            seq: frame.seq,
            offset: frame.offset,
            record,
            status: if reasons.is_empty() {
                RecordStatus::Verified
            } else {
                RecordStatus::Invalid(reasons.join("; "))
            },
            interrupted,
        });
    }
    problems.sort_by_key(|p| (p.offset, p.seq.is_some()));

    // The tree covers the records before the first problem.
    let good = problems
        .first()
        .map(|p| {
            scan.frames
                .iter()
                .take_while(|f| f.offset < p.offset)
                .count()
        })
        .unwrap_or(scan.frames.len());
    let leaves: Vec<Digest> = scan.frames[..good].iter().map(|f| f.record_hash).collect();
    let root = merkle_root(&leaves);

    let checkpoint = witnessed.map(|cp| {
        let status = check_against(cp, origin.as_deref(), &leaves);
        if let Some(reason) = status_problem(&status) {
            problems.push(Problem {
                seq: None,
                offset: u64::MAX,
                reason,
            });
        }
        status
    });
    Ok(Report {
        path: path.to_path_buf(),
        key_id: key.key_id(),
        origin,
        records,
        problems,
        end: scan.end,
        size: leaves.len() as u64,
        root,
        checkpoint,
    })
}

fn header_failure(path: &Path, key: &PublicKey, defect: HeaderDefect) -> Report {
    Report {
        path: path.to_path_buf(),
        key_id: key.key_id(),
        origin: None,
        records: Vec::new(),
        problems: vec![Problem {
            seq: None,
            offset: 0,
            reason: defect.to_string(),
        }],
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

fn check_against(cp: &Checkpoint, origin: Option<&str>, leaves: &[Digest]) -> CheckpointStatus {
    let actual = origin.unwrap_or("");
    if cp.origin != actual {
        return CheckpointStatus::WrongOrigin {
            witnessed: cp.origin.clone(),
            actual: actual.to_string(),
        };
    }
    let Ok(n) = usize::try_from(cp.size) else {
        return CheckpointStatus::Shorter {
            witnessed: cp.size,
            actual: leaves.len() as u64,
        };
    };
    if n > leaves.len() {
        return CheckpointStatus::Shorter {
            witnessed: cp.size,
            actual: leaves.len() as u64,
        };
    }
    if merkle_root(&leaves[..n]) != cp.root {
        return CheckpointStatus::Forked { size: cp.size };
    }
    CheckpointStatus::Extends { size: cp.size }
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

    let mut frames = Vec::new();
    let mut problems = Vec::new();
    let mut expected_seq = 0u64;
    let mut prev = genesis_hash(&header_bytes);
    let mut resynced = false;
    let mut off = FRAME_ALIGN;
    let mut scratch = Vec::new();
    let end = loop {
        if off >= len {
            break LogEnd::Clean { offset: off };
        }
        match read_frame(src, off, &mut scratch) {
            Ok(frame) => {
                let seq = frame.preamble.seq;
                let problem = if resynced {
                    None
                } else if seq != expected_seq {
                    Some(format!(
                        "its sequence number is {seq} where {expected_seq} was expected: a record \
                         is missing, repeated or out of order"
                    ))
                } else if frame.preamble.prev_hash != prev {
                    Some(format!(
                        "its previous-record hash does not match record {}: a record before it \
                         was changed, removed or replaced",
                        expected_seq.saturating_sub(1)
                    ))
                } else {
                    None
                };
                resynced = false;
                visit(&frame);
                frames.push(FrameSummary {
                    offset: off,
                    len: frame.len,
                    seq,
                    record_hash: frame.record_hash,
                    signature: frame.signature,
                });
                expected_seq = seq.wrapping_add(1);
                prev = frame.record_hash;
                off += frame.len;
                if let Some(reason) = problem {
                    problems.push(Problem {
                        seq: Some(seq),
                        offset: frame.offset,
                        reason,
                    });
                    if stop_at_damage {
                        break LogEnd::Clean { offset: off };
                    }
                }
            }
            Err(FrameDefect::Io(e)) => {
                return Err(ScanError::Io {
                    offset: off,
                    source: std::io::Error::other(e),
                })
            }
            Err(defect) => match next_valid_frame(src, off, &mut scratch) {
                None => {
                    break LogEnd::TornTail {
                        offset: off,
                        len: len - off,
                    }
                }
                Some(next) => {
                    problems.push(Problem {
                        seq: Some(expected_seq),
                        offset: off,
                        reason: format!(
                            "the frame is damaged ({defect}) and valid records follow it at offset {next}"
                        ),
                    });
                    if stop_at_damage {
                        break LogEnd::Clean { offset: off };
                    }
                    off = next;
                    resynced = true;
                }
            },
        }
    };
    Ok(Scan {
        header,
        frames,
        problems,
        end,
    })
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
    frames
        .par_chunks(SIGNATURE_BATCH)
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
/// R and s canonically encoded, and [8]([s]B - R - [k]A) = 0 with
/// k = SHA-512(R || A || M) mod l (cofactored, as in ZIP 215 but with
/// canonical encodings). A batch is checked with random 128-bit weights z_i:
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
    let rng = ring::rand::SystemRandom::new();
    let mut b_coefficient = Scalar::ZERO;
    let mut a_coefficient = Scalar::ZERO;
    let mut r_weights = Vec::with_capacity(signatures.len());
    let mut r_points = Vec::with_capacity(signatures.len());
    for (signature, message) in signatures.iter().zip(messages) {
        let r_bytes: [u8; 32] = signature[..32].try_into().unwrap_or_default();
        let s_bytes: [u8; 32] = signature[32..].try_into().unwrap_or_default();
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        let r_point = match CompressedEdwardsY(r_bytes).decompress() {
            Some(p) if p.compress().0 == r_bytes => p,
            _ => return false,
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
            if rng.fill(&mut z[..16]).is_err() {
                return false;
            }
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
