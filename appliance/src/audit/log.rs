//! Creating, opening (with recovery) and appending to a log.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use reliquary_image::keys::{PublicKey, SigningKey};
use reliquary_image::regular_file;

use super::checkpoint::{merkle_root, Checkpoint, MerkleAccumulator};
use super::layout::{
    encode_frame, genesis_hash, record_hash, signature_message, FileHeader, FileSource, Frame,
    FRAME_ALIGN,
};
use super::record::{
    decode_body, encode_body, Operator, OperatorRef, Payload, Record, RecordMeta, RecordTime,
    SignInFailed,
};
use super::verify::{scan, FrameSummary, LogEnd, Problem, ScanError};
use super::{
    AuditError, Digest, CHECKPOINT_FILE, CHECKPOINT_HISTORY_FILE, KEY_FILE, LOG_FILE,
    PUBLIC_KEY_FILE,
};

/// Free space `ensure_space` should be asked for before a restore starts:
/// room for `RestoreStarted`, `RestoreFinished`, a `Recovered` record and
/// the checkpoint, with margin. Records are far below 8 KiB.
pub const RESTORE_RESERVE_BYTES: u64 = 64 * 1024;

/// When this software was built (Unix seconds): `SOURCE_DATE_EPOCH`, else
/// the git commit time, else a fixed date (see `build.rs`). No record can be
/// older, so it is part of the clock floor.
pub const BUILD_UNIX_SECONDS: i64 = parse_decimal(env!("RELIQUARY_BUILD_UNIX"));

/// The operator id used for records the appliance writes by itself.
const SYSTEM_OPERATOR: &str = "system";
const MAX_OPERATOR_ID: usize = 64;
const MAX_OPERATOR_NAME: usize = 128;
const MAX_NOTE_TEXT: usize = 4096;

/// The real-time clock. Injectable so a test can present 1970.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_unix_millis(&self) -> i64;
}

/// The system clock (the RTC of the machine being serviced).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_millis(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            // A clock before 1970 is as untrustworthy as 1970 itself.
            Err(_) => 0,
        }
    }
}

/// A clock that always reads the same time, for fixtures and tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_unix_millis(&self) -> i64 {
        self.0
    }
}

/// What the appliance knows about the current session, stamped on every
/// record it writes.
#[derive(Debug)]
pub struct Environment {
    pub clock: Box<dyn Clock>,
    pub boot_id: String,
    pub software_version: String,
    /// Digest of the trust store in use, computed by the restore code.
    pub trust_store_digest: Option<Digest>,
    /// The clock floor's lower bound: the software's build time, Unix ms.
    pub build_unix_millis: i64,
}

impl Environment {
    /// The running system: its clock, its boot id, this software version
    /// and its build time.
    pub fn system(trust_store_digest: Option<Digest>) -> Self {
        Self {
            clock: Box::new(SystemClock),
            boot_id: read_boot_id(),
            software_version: env!("CARGO_PKG_VERSION").to_string(),
            trust_store_digest,
            build_unix_millis: BUILD_UNIX_SECONDS.saturating_mul(1000),
        }
    }
}

/// A record that is on disk and synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedRecord {
    pub seq: u64,
    pub offset: u64,
    pub record_hash: Digest,
    pub time: RecordTime,
}

/// What recovery did when `open` found a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub offset: u64,
    pub length: u64,
    pub sha256: Digest,
    pub quarantine: PathBuf,
    /// The `Recovered` record that documents it.
    pub record_seq: u64,
}

/// An open, locked audit log, ready for appends.
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    path: PathBuf,
    file: Flock<File>,
    key: SigningKey,
    appliance_id: String,
    env: Environment,
    next_seq: u64,
    last_hash: Digest,
    last_time_millis: i64,
    end: u64,
    tree: MerkleAccumulator,
    degraded: Option<String>,
    recovery: Option<Recovery>,
}

/// A log shared between threads, even after a panic elsewhere poisoned its
/// lock: each append is whole or recovered on open, so the log itself is
/// never half-updated.
pub fn lock_shared(log: &std::sync::Mutex<AuditLog>) -> std::sync::MutexGuard<'_, AuditLog> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AuditLog {
    /// Creates `dir` (if needed), a new appliance key pair in it, and a log
    /// whose first record is `LogCreated`. Refuses to overwrite anything.
    /// The default appliance id is `appliance-<key id>`.
    pub fn init(
        dir: &Path,
        appliance_id: Option<&str>,
        env: Environment,
    ) -> Result<Self, AuditError> {
        refuse_existing(dir)?;
        let (_, pkcs8) = SigningKey::generate()?;
        Self::init_with_key(dir, appliance_id, &pkcs8, env)
    }

    /// [`AuditLog::init`] with a given PKCS#8 key; used by the deterministic
    /// fixture generator and by provisioning that brings its own key.
    pub fn init_with_key(
        dir: &Path,
        appliance_id: Option<&str>,
        pkcs8: &[u8],
        env: Environment,
    ) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(|source| AuditError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
        refuse_existing(dir)?;
        let key_path = dir.join(KEY_FILE);
        let key = SigningKey::from_pkcs8(pkcs8, &key_path)?;
        let public = key.public_key();
        let appliance_id = match appliance_id {
            Some(id) => id.to_string(),
            None => format!("appliance-{}", public.key_id()),
        };
        if !valid_appliance_id(&appliance_id) {
            return Err(AuditError::InvalidApplianceId { id: appliance_id });
        }
        write_new(&key_path, pkcs8, 0o600)?;
        write_new(
            &dir.join(PUBLIC_KEY_FILE),
            public.to_text(Some(&appliance_id)).as_bytes(),
            0o644,
        )?;

        // Header and LogCreated are written to a temporary file and linked
        // into place, so a crash never leaves a log without its first record.
        let header = FileHeader {
            public_key: *public.as_bytes(),
        }
        .encode();
        let mut bytes = header.to_vec();
        bytes.resize(FRAME_ALIGN as usize, 0);
        let time = stamp(&*env.clock, env.build_unix_millis, 0);
        let meta = RecordMeta {
            time,
            boot_id: env.boot_id.clone(),
            appliance_id: appliance_id.clone(),
            software_version: env.software_version.clone(),
            trust_store_digest: env.trust_store_digest,
            operator: system_operator(),
        };
        let payload = Payload::LogCreated {
            public_key: Digest(*public.as_bytes()),
        };
        let body = encode_body(0, genesis_hash(&header), &meta, &payload)?;
        let signature = key.sign(&signature_message(&record_hash(&body)));
        bytes.extend_from_slice(&encode_frame(&body, &signature));

        let path = dir.join(LOG_FILE);
        let tmp = dir.join(format!("{LOG_FILE}.new"));
        let create = |source| AuditError::Create {
            path: path.clone(),
            source,
        };
        // A leftover from an init that crashed holds nothing of value.
        let _ = std::fs::remove_file(&tmp);
        write_new(&tmp, &bytes, 0o644)?;
        std::fs::hard_link(&tmp, &path).map_err(create)?;
        std::fs::remove_file(&tmp).map_err(create)?;
        sync_dir(dir).map_err(create)?;
        Self::open(dir, env)
    }

    /// Opens and locks the log in `dir`. Checks its structure and hash chain
    /// (not the signatures; `verify_dir` does that). A torn tail is copied to
    /// `audit.log.torn-<offset>-<hash>`, cut off, and documented by a signed
    /// `Recovered` record. Damage followed by valid records is refused.
    pub fn open(dir: &Path, env: Environment) -> Result<Self, AuditError> {
        let path = dir.join(LOG_FILE);
        let file = regular_file::open_with(OpenOptions::new().read(true).write(true), &path)
            .map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })?;
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| AuditError::Locked { path: path.clone() })?;
        let key_path = dir.join(KEY_FILE);
        let key = SigningKey::load(&key_path)?;
        let len = file
            .metadata()
            .map_err(|source| AuditError::Read {
                path: path.clone(),
                offset: 0,
                source,
            })?
            .len();

        let mut first: Option<Frame> = None;
        let mut last: Option<Frame> = None;
        let scanned = scan(&FileSource { file: &file, len }, true, &mut |f: &Frame| {
            if first.is_none() {
                first = Some(f.clone());
            } else {
                last = Some(f.clone());
            }
        });
        let scanned = match scanned {
            Ok(s) => s,
            Err(ScanError::Header(defect)) => return Err(AuditError::Header { path, defect }),
            Err(ScanError::Io { offset, source }) => {
                return Err(AuditError::Read {
                    path,
                    offset,
                    source,
                })
            }
        };
        if scanned.header.public_key != *key.public_key().as_bytes() {
            return Err(AuditError::KeyMismatch {
                key: key_path,
                log: path,
            });
        }
        if let Some(problem) = scanned.problems.first() {
            return Err(AuditError::Damaged {
                path,
                problem: problem.clone(),
            });
        }
        let damaged = |seq, offset, reason: String| AuditError::Damaged {
            path: path.clone(),
            problem: Problem {
                seq: Some(seq),
                offset,
                reason,
            },
        };
        let first = first.ok_or_else(|| {
            damaged(
                0,
                FRAME_ALIGN,
                "the log holds no LogCreated record".to_string(),
            )
        })?;
        let decode = |f: &Frame| -> Result<Record, AuditError> {
            decode_body(&f.body, &f.preamble)
                .map_err(|e| damaged(f.preamble.seq, f.offset, e.to_string()))
        };
        let created = decode(&first)?;
        let latest = match &last {
            Some(f) => decode(f)?,
            None => created.clone(),
        };
        check_witness(dir, &path, &key.public_key(), &scanned.frames)?;
        let tail = scanned
            .frames
            .last()
            .map(|f| (f.seq, f.record_hash, f.offset + f.len));
        let (last_seq, last_hash, end) = tail.unwrap_or((0, Digest::default(), FRAME_ALIGN));
        let mut tree = MerkleAccumulator::default();
        scanned.frames.iter().for_each(|f| tree.push(f.record_hash));
        let mut log = Self {
            dir: dir.to_path_buf(),
            path,
            file,
            key,
            appliance_id: created.meta.appliance_id,
            env,
            next_seq: last_seq + 1,
            last_hash,
            last_time_millis: latest.meta.time.unix_millis,
            end,
            tree,
            degraded: None,
            recovery: None,
        };
        if let LogEnd::TornTail { offset, len } = scanned.end {
            log.recover(offset, len)?;
        }
        Ok(log)
    }

    /// Appends one record: a single write, then `fdatasync`. Only a returned
    /// `Ok` means the record is logged. A failed write or sync is not
    /// retried: the log turns degraded and refuses every later append.
    /// After a `RestoreFinished` the checkpoint file is rewritten.
    pub fn append(
        &mut self,
        operator: &Operator,
        payload: Payload,
    ) -> Result<AppendedRecord, AuditError> {
        if let Some(reason) = &self.degraded {
            return Err(AuditError::Degraded {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
        validate(operator, &payload)?;
        let finished = matches!(payload, Payload::RestoreFinished(_));
        let appended = self.write_record(operator.clone(), payload)?;
        if finished {
            self.write_checkpoint()
                .map_err(|e| AuditError::CheckpointAfterRestore {
                    seq: appended.seq,
                    reason: e.to_string(),
                })?;
        }
        Ok(appended)
    }

    /// The current checkpoint (unsigned).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            origin: Checkpoint::origin_for(&self.appliance_id),
            size: self.tree.size(),
            root: self.tree.root(),
        }
    }

    /// Signs the current checkpoint, appends it to `DIR/checkpoint.history`
    /// and atomically replaces `DIR/checkpoint` with it. Returns the
    /// checkpoint and its note text.
    pub fn write_checkpoint(&self) -> Result<(Checkpoint, String), AuditError> {
        let cp = self.checkpoint();
        let note = cp.sign(&self.key);
        let history = self.dir.join(CHECKPOINT_HISTORY_FILE);
        regular_file::open_with(
            OpenOptions::new().append(true).create(true).mode(0o644),
            &history,
        )
        .and_then(|mut f| f.write_all(note.as_bytes()).and_then(|()| f.sync_data()))
        .map_err(|source| AuditError::WriteCheckpoint {
            path: history,
            source,
        })?;
        let path = self.dir.join(CHECKPOINT_FILE);
        let tmp = self.dir.join(format!("{CHECKPOINT_FILE}.new"));
        let err = |source| AuditError::WriteCheckpoint {
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_file(&tmp);
        write_new(&tmp, note.as_bytes(), 0o644)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        sync_dir(&self.dir).map_err(err)?;
        Ok((cp, note))
    }

    /// Refuses (exit 4) unless the log's file system has `bytes_needed`
    /// bytes free. Call it with [`RESTORE_RESERVE_BYTES`] before a restore,
    /// so the `RestoreFinished` record can never be lost to a full stick.
    pub fn ensure_space(&self, bytes_needed: u64) -> Result<(), AuditError> {
        let st = nix::sys::statvfs::statvfs(&self.dir).map_err(|source| AuditError::Statvfs {
            path: self.dir.clone(),
            source,
        })?;
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        let available = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
        if available < bytes_needed {
            return Err(AuditError::NoSpace {
                path: self.path.clone(),
                available,
                needed: bytes_needed,
            });
        }
        Ok(())
    }

    /// Number of records.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    pub fn appliance_id(&self) -> &str {
        &self.appliance_id
    }

    /// What recovery did when this log was opened, if anything.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Why the log refuses appends, once a write or sync has failed.
    pub fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }

    fn write_record(
        &mut self,
        operator: Operator,
        payload: Payload,
    ) -> Result<AppendedRecord, AuditError> {
        let seq = self.next_seq;
        let time = stamp(
            &*self.env.clock,
            self.env.build_unix_millis,
            self.last_time_millis,
        );
        let meta = RecordMeta {
            time,
            boot_id: self.env.boot_id.clone(),
            appliance_id: self.appliance_id.clone(),
            software_version: self.env.software_version.clone(),
            trust_store_digest: self.env.trust_store_digest,
            operator,
        };
        let body = encode_body(seq, self.last_hash, &meta, &payload)?;
        let hash = record_hash(&body);
        let frame = encode_frame(&body, &self.key.sign(&signature_message(&hash)));
        let offset = self.end;
        if let Err(source) = self.file.write_all_at(&frame, offset) {
            self.degraded = Some(format!("writing record {seq} failed: {source}"));
            return Err(AuditError::AppendWrite {
                path: self.path.clone(),
                seq,
                offset,
                source,
            });
        }
        if let Err(source) = self.file.sync_data() {
            self.degraded = Some(format!("syncing record {seq} failed: {source}"));
            return Err(AuditError::AppendSync {
                path: self.path.clone(),
                seq,
                source,
            });
        }
        self.end += frame.len() as u64;
        self.next_seq += 1;
        self.last_hash = hash;
        self.last_time_millis = time.unix_millis;
        self.tree.push(hash);
        Ok(AppendedRecord {
            seq,
            offset,
            record_hash: hash,
            time,
        })
    }

    /// Copies the torn tail aside, cuts it off, syncs, and logs `Recovered`.
    fn recover(&mut self, offset: u64, length: u64) -> Result<(), AuditError> {
        let quarantine_err = |quarantine: &Path, source| AuditError::Quarantine {
            path: self.path.clone(),
            offset,
            quarantine: quarantine.to_path_buf(),
            source,
        };
        let sha256 = hash_range(&self.file, offset, length)
            .map_err(|source| quarantine_err(&self.path, source))?;
        let name = format!("{LOG_FILE}.torn-{offset}-{}", &sha256.to_hex()[..16]);
        let quarantine = self.dir.join(&name);
        // The copy is made under a temporary name and renamed only once it is
        // complete and synced, so a file under the final name is a whole copy.
        // An existing one is still re-hashed before it is trusted: an older
        // release wrote the copy in place, and an interrupted copy of that
        // kind is a prefix under the final name.
        let intact = holds_exactly(&quarantine, length, &sha256)
            .map_err(|source| quarantine_err(&quarantine, source))?;
        if !intact {
            let temporary = self.dir.join(format!(".{name}.partial"));
            let copied = copy_range(&self.file, offset, length, &temporary)
                .and_then(|()| std::fs::rename(&temporary, &quarantine))
                .and_then(|()| sync_dir(&self.dir));
            if let Err(source) = copied {
                // Give back the space; the next open starts the copy again.
                let _ = std::fs::remove_file(&temporary);
                return Err(quarantine_err(&quarantine, source));
            }
        }
        if let Err(source) = self
            .file
            .set_len(offset)
            .and_then(|()| self.file.sync_all())
        {
            self.degraded = Some(format!("cutting off the torn tail failed: {source}"));
            return Err(AuditError::Truncate {
                path: self.path.clone(),
                offset,
                source,
            });
        }
        self.end = offset;
        let appended = self.write_record(
            system_operator(),
            Payload::Recovered {
                offset,
                length,
                sha256,
                quarantine_file: name,
            },
        )?;
        self.recovery = Some(Recovery {
            offset,
            length,
            sha256,
            quarantine,
            record_seq: appended.seq,
        });
        Ok(())
    }
}

/// The time to record: max(RTC, floor), where the floor is the later of the
/// previous record's time and the build time.
fn stamp(clock: &dyn Clock, build_millis: i64, last_millis: i64) -> RecordTime {
    let rtc = clock.now_unix_millis();
    let floor = last_millis.max(build_millis);
    RecordTime {
        unix_millis: rtc.max(floor),
        rtc_unix_millis: rtc,
        floor_unix_millis: floor,
        clock_anomaly: rtc < floor,
    }
}

fn system_operator() -> Operator {
    Operator {
        id: SYSTEM_OPERATOR.to_string(),
        name: None,
    }
}

fn validate(operator: &Operator, payload: &Payload) -> Result<(), AuditError> {
    let bad = |field, reason: &str| {
        Err(AuditError::InvalidField {
            field,
            reason: reason.to_string(),
        })
    };
    let id = &operator.id;
    if id.is_empty() || id.len() > MAX_OPERATOR_ID || id.chars().any(char::is_control) {
        return bad(
            "the operator id",
            "use 1 to 64 characters without control characters",
        );
    }
    if operator
        .name
        .as_ref()
        .is_some_and(|n| n.len() > MAX_OPERATOR_NAME || n.chars().any(char::is_control))
    {
        return bad(
            "the operator name",
            "use at most 128 characters without control characters",
        );
    }
    let too_long = |text: &Option<String>| {
        text.as_ref()
            .is_some_and(|t| t.len() > MAX_NOTE_TEXT || t.chars().any(char::is_control))
    };
    match payload {
        Payload::OperatorNote { text } if text.is_empty() || text.len() > MAX_NOTE_TEXT => {
            bad("the note text", "use 1 to 4096 bytes")
        }
        Payload::RestoreStarted(s) if too_long(&s.meaning) => bad(
            "the meaning of the signature",
            "use at most 4096 bytes without control characters",
        ),
        Payload::RestoreStarted(s) if too_long(&s.reason) => bad(
            "the reason or work order",
            "use at most 4096 bytes without control characters",
        ),
        Payload::SignInFailed(SignInFailed { operator_id, .. })
        | Payload::SignedIn(OperatorRef { operator_id })
        | Payload::OperatorUnlocked(OperatorRef { operator_id })
            if operator_id.len() > MAX_OPERATOR_ID || operator_id.chars().any(char::is_control) =>
        {
            bad(
                "the operator id the record is about",
                "use at most 64 characters without control characters",
            )
        }
        Payload::LogCreated { .. } | Payload::Recovered { .. } => bad(
            "the record kind",
            "LogCreated and Recovered are written by the log itself",
        ),
        _ => Ok(()),
    }
}

fn valid_appliance_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn refuse_existing(dir: &Path) -> Result<(), AuditError> {
    // A witness left by an earlier log would refuse the new one at its first open.
    for name in [
        KEY_FILE,
        PUBLIC_KEY_FILE,
        LOG_FILE,
        CHECKPOINT_FILE,
        CHECKPOINT_HISTORY_FILE,
    ] {
        let path = dir.join(name);
        // Any entry counts, a dangling link too.
        if path.symlink_metadata().is_ok() {
            return Err(AuditError::AlreadyExists { path });
        }
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AuditError> {
    let err = |source| AuditError::Create {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn hash_range(file: &File, offset: u64, length: u64) -> std::io::Result<Digest> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for_each_chunk(file, offset, length, |chunk| {
        ctx.update(chunk);
        Ok(())
    })?;
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(Digest(out))
}

/// Refuses a log that is shorter than, or forked from, the last checkpoint
/// the stick itself wrote (the larger of the last complete entry of
/// `checkpoint.history` and `checkpoint`). No checkpoint yet: nothing to
/// compare.
fn check_witness(
    dir: &Path,
    log_path: &Path,
    key: &PublicKey,
    frames: &[FrameSummary],
) -> Result<(), AuditError> {
    let latest = dir.join(CHECKPOINT_FILE);
    let latest = match std::fs::symlink_metadata(&latest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        _ => Some((Checkpoint::read_verified(&latest, key)?, latest)),
    };
    let history = dir.join(CHECKPOINT_HISTORY_FILE);
    let from_history = last_history_entry(&history)?
        .map(|note| {
            Checkpoint::parse_verified(&note, key).map_err(|source| AuditError::BadCheckpoint {
                path: history.clone(),
                source,
            })
        })
        .transpose()?
        .map(|cp| (cp, history));
    let Some((witness, witness_path)) = [latest, from_history]
        .into_iter()
        .flatten()
        .max_by_key(|(cp, _)| cp.size)
    else {
        return Ok(());
    };
    let refuse = |reason: String| AuditError::Witness {
        path: log_path.to_path_buf(),
        witness: witness_path.clone(),
        reason,
    };
    let held = frames.len() as u64;
    if witness.size > held {
        return Err(refuse(format!(
            "holds {held} records, fewer than the {} witnessed",
            witness.size
        )));
    }
    let leaves: Vec<Digest> = frames[..witness.size as usize]
        .iter()
        .map(|f| f.record_hash)
        .collect();
    if merkle_root(&leaves) != witness.root {
        return Err(refuse(format!(
            "has forked: its first {} records do not have the witnessed root",
            witness.size
        )));
    }
    Ok(())
}

/// The last complete signed note in the checkpoint history: five lines
/// (origin, size, root, blank, signature). A torn last append is ignored;
/// only the file's last 32 KiB are read.
fn last_history_entry(path: &Path) -> Result<Option<String>, AuditError> {
    let read_err = |source| AuditError::ReadCheckpoint {
        path: path.to_path_buf(),
        source,
    };
    let file = match regular_file::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        opened => opened.map_err(read_err)?,
    };
    let len = file.metadata().map_err(read_err)?.len();
    let start = len.saturating_sub(32 * 1024);
    let mut tail = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut tail, start).map_err(read_err)?;
    let text = String::from_utf8_lossy(&tail);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The piece after the last newline is empty, or a torn line.
    lines.pop();
    let end = (4..lines.len())
        .rev()
        .find(|&i| lines[i].starts_with('\u{2014}') && lines[i - 1].is_empty());
    Ok(end.map(|i| {
        let mut note = lines[i - 4..=i].join("\n");
        note.push('\n');
        note
    }))
}

/// Whether `path` is a regular file of exactly `length` bytes hashing to
/// `sha256`. Absent is `false`; any other failure to read it is an error.
fn holds_exactly(path: &Path, length: u64, sha256: &Digest) -> std::io::Result<bool> {
    let file = match regular_file::open_no_symlink(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() != length {
        return Ok(false);
    }
    Ok(hash_range(&file, 0, length)? == *sha256)
}

/// Copies `length` bytes at `offset` to `to` (replacing a leftover of an
/// interrupted copy) and syncs it.
fn copy_range(file: &File, offset: u64, length: u64, to: &Path) -> std::io::Result<()> {
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(to)?;
    for_each_chunk(file, offset, length, |chunk| out.write_all(chunk))?;
    out.sync_all()
}

fn for_each_chunk(
    file: &File,
    offset: u64,
    length: u64,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    while done < length {
        let n = (length - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset + done)?;
        f(&buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

fn read_boot_id() -> String {
    let mut text = String::new();
    let read = File::open("/proc/sys/kernel/random/boot_id")
        .and_then(|f| f.take(64).read_to_string(&mut text));
    match read {
        Ok(_) => text.trim().to_string(),
        Err(_) => "unknown".to_string(),
    }
}

const fn parse_decimal(s: &str) -> i64 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v: i64 = 0;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as i64;
        i += 1;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(millis: i64) -> Environment {
        Environment {
            clock: Box::new(FixedClock(millis)),
            boot_id: "boot".into(),
            software_version: "test".into(),
            trust_store_digest: None,
            build_unix_millis: BUILD_UNIX_SECONDS * 1000,
        }
    }

    fn op() -> Operator {
        Operator {
            id: "op".into(),
            name: None,
        }
    }

    #[test]
    fn the_clock_floor_is_the_later_of_the_last_record_and_the_build_time() {
        let build = BUILD_UNIX_SECONDS * 1000;
        assert_eq!(Environment::system(None).build_unix_millis, build);
        let t = stamp(&FixedClock(0), build, 5);
        assert_eq!((t.unix_millis, t.clock_anomaly), (build, true));
        let t = stamp(&FixedClock(build + 10), build, build + 20);
        assert_eq!(
            (t.unix_millis, t.floor_unix_millis, t.clock_anomaly),
            (build + 20, build + 20, true)
        );
        let t = stamp(&FixedClock(build + 30), build, build + 20);
        assert_eq!((t.unix_millis, t.clock_anomaly), (build + 30, false));
    }

    #[test]
    fn a_partial_quarantine_file_under_the_final_name_is_not_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(AuditLog::init(dir.path(), Some("unit"), env(0)).expect("init"));
        let path = dir.path().join(LOG_FILE);
        let len = std::fs::metadata(&path).expect("stat").len();
        let tail = b"RLQR a torn frame whose copy an older release cut short".repeat(100);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|f| f.write_all_at(&tail, len))
            .expect("write");
        // What an interrupted in-place copy of an older release left behind.
        let sha = super::super::layout::sha256(&[&tail]);
        let name = format!("{LOG_FILE}.torn-{len}-{}", &sha.to_hex()[..16]);
        std::fs::write(dir.path().join(&name), &tail[..1000]).expect("partial");

        let log = AuditLog::open(dir.path(), env(0)).expect("open");
        let r = log.recovery().expect("recovered").clone();
        assert_eq!(r.quarantine, dir.path().join(&name));
        assert_eq!(r.length, tail.len() as u64);
        assert_eq!(std::fs::read(&r.quarantine).expect("read"), tail);
        assert!(!dir.path().join(format!(".{name}.partial")).exists());
    }

    #[test]
    fn open_recovers_a_torn_tail_into_quarantine_and_logs_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = AuditLog::init(dir.path(), Some("unit"), env(0)).expect("init");
        log.append(&op(), Payload::OperatorNote { text: "a".into() })
            .expect("append");
        drop(log);
        let path = dir.path().join(LOG_FILE);
        let len = std::fs::metadata(&path).expect("stat").len();
        let torn = OpenOptions::new().append(true).open(&path).expect("open");
        torn.write_all_at(b"RLQR partial frame", len)
            .expect("write");
        drop(torn);

        let log = AuditLog::open(dir.path(), env(0)).expect("open");
        let r = log.recovery().expect("recovered").clone();
        assert_eq!((r.offset, r.length, r.record_seq), (len, 18, 2));
        assert_eq!(
            std::fs::read(&r.quarantine).expect("read"),
            b"RLQR partial frame"
        );
        assert_eq!(log.size(), 3);
        drop(log);
        // A second open finds nothing to recover.
        assert!(AuditLog::open(dir.path(), env(0))
            .expect("open")
            .recovery()
            .is_none());
    }

    #[test]
    fn appends_are_validated_and_a_second_writer_is_locked_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = AuditLog::init(dir.path(), None, env(0)).expect("init");
        assert!(log.appliance_id().starts_with("appliance-"));
        let empty = Operator {
            id: String::new(),
            name: None,
        };
        let note = Payload::OperatorNote { text: "x".into() };
        assert!(matches!(
            log.append(&empty, note.clone()),
            Err(AuditError::InvalidField { .. })
        ));
        let forged = Payload::LogCreated {
            public_key: Digest([0; 32]),
        };
        assert!(matches!(
            log.append(&op(), forged),
            Err(AuditError::InvalidField { .. })
        ));
        assert!(matches!(
            AuditLog::open(dir.path(), env(0)),
            Err(AuditError::Locked { .. })
        ));
        assert!(matches!(
            AuditLog::init(dir.path(), None, env(0)),
            Err(AuditError::AlreadyExists { .. })
        ));
        assert_eq!(log.size(), 1);
    }
}
