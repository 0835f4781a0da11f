//! What a record says: the fields every record carries and the payload of
//! each kind. The body is the 48-byte preamble from `layout`, then postcard
//! of [`RecordMeta`], then postcard of the kind's payload, with nothing after.
//!
//! Body version 2 added fields to `RestoreStarted` and `RestoreFinished` and
//! the kind `SignInFailed`. Version 1 bodies still decode, through the
//! version 1 shapes below; [`Record::body_version`] tells a reader which
//! fields the record really carried. The kinds `SignedIn` and
//! `OperatorUnlocked` came later within body version 2: a reader that does
//! not know them refuses them as unknown kinds.

use serde::{Deserialize, Serialize};

use super::layout::{BodyPreamble, BODY_PREAMBLE_LEN, BODY_VERSION, MAX_BODY_LEN};
use super::{AuditError, Digest};

/// The kind of a record, as stored in the body preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Kind {
    LogCreated = 1,
    RestoreStarted = 2,
    RestoreFinished = 3,
    ImageVerified = 4,
    DiskChecked = 5,
    Recovered = 6,
    OperatorNote = 7,
    /// Since body version 2.
    SignInFailed = 8,
    /// A good sign-in after failed ones: the failures count from zero again.
    SignedIn = 9,
    /// A supervisor lifted an operator's lockout.
    OperatorUnlocked = 10,
}

impl Kind {
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Kind::LogCreated,
            2 => Kind::RestoreStarted,
            3 => Kind::RestoreFinished,
            4 => Kind::ImageVerified,
            5 => Kind::DiskChecked,
            6 => Kind::Recovered,
            7 => Kind::OperatorNote,
            8 => Kind::SignInFailed,
            9 => Kind::SignedIn,
            10 => Kind::OperatorUnlocked,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::LogCreated => "LogCreated",
            Kind::RestoreStarted => "RestoreStarted",
            Kind::RestoreFinished => "RestoreFinished",
            Kind::ImageVerified => "ImageVerified",
            Kind::DiskChecked => "DiskChecked",
            Kind::Recovered => "Recovered",
            Kind::OperatorNote => "OperatorNote",
            Kind::SignInFailed => "SignInFailed",
            Kind::SignedIn => "SignedIn",
            Kind::OperatorUnlocked => "OperatorUnlocked",
        }
    }
}

/// When a record was written. All times are Unix milliseconds, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordTime {
    /// The time recorded: max(RTC, floor).
    pub unix_millis: i64,
    /// What the real-time clock said.
    pub rtc_unix_millis: i64,
    /// max(previous record's time, the software's build time).
    pub floor_unix_millis: i64,
    /// The RTC was below the floor, so it cannot be trusted.
    pub clock_anomaly: bool,
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub id: String,
    pub name: Option<String>,
}

/// Fields every record carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    pub time: RecordTime,
    /// `/proc/sys/kernel/random/boot_id` of the boot that wrote the record.
    pub boot_id: String,
    pub appliance_id: String,
    pub software_version: String,
    /// Digest of the trust store the restore code used, when it gave one.
    pub trust_store_digest: Option<Digest>,
    pub operator: Operator,
}

/// A signer of an image and what the signature means (21 CFR 11.50).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerRef {
    pub name: String,
    pub key_id: String,
    /// E.g. "authored", "approved for production".
    pub meaning: String,
    /// When the signer signed, by the signer's clock (seconds since the
    /// Unix epoch, UTC); `None` in a version 1 record, which did not say.
    pub signed_unix: Option<i64>,
}

/// Which image a record is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub uuid: String,
    pub name: String,
    pub version: String,
    pub manifest_digest: Digest,
    pub signers: Vec<SignerRef>,
}

/// Which disk a record is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    pub path: String,
    pub model: String,
    pub serial: String,
    pub wwn: Option<String>,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
}

/// How a restore ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreOutcome {
    Success,
    /// `chunk` names the image chunk that failed, when one did.
    Failed {
        chunk: Option<u64>,
        reason: String,
    },
    Cancelled,
}

/// A record that forgot to say how the restore ended says it failed.
impl Default for RestoreOutcome {
    fn default() -> Self {
        RestoreOutcome::Failed {
            chunk: None,
            reason: "no outcome was recorded".into(),
        }
    }
}

impl RestoreOutcome {
    /// The word used by `show --result` and the exports.
    pub fn word(&self) -> &'static str {
        match self {
            RestoreOutcome::Success => "success",
            RestoreOutcome::Failed { .. } => "failed",
            RestoreOutcome::Cancelled => "cancelled",
        }
    }
}

/// The result of a verification or a disk check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckResult {
    Passed,
    Failed { reason: String },
}

/// Which kind of restore was run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreMode {
    /// Every extent the image describes is written.
    #[default]
    Full,
    /// A restore that continues the interrupted one started at
    /// `interrupted_seq`.
    Resume { interrupted_seq: u64 },
    /// Only extents that differ from the image on the disk are written.
    OnlyDifferences,
}

impl RestoreMode {
    /// How `show` and the exports name the mode.
    pub fn describe(&self) -> String {
        match self {
            RestoreMode::Full => "full".into(),
            RestoreMode::Resume { interrupted_seq } => {
                format!("resume of record {interrupted_seq}")
            }
            RestoreMode::OnlyDifferences => "only differences".into(),
        }
    }
}

/// What the restore does with extents the image did not capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unmapped {
    /// Left as they were on the disk.
    #[default]
    Left,
    /// Overwritten with zeros.
    Zeroed,
    /// Discarded (TRIM/UNMAP) on the disk.
    Discarded,
}

impl Unmapped {
    pub fn word(self) -> &'static str {
        match self {
            Unmapped::Left => "left",
            Unmapped::Zeroed => "zeroed",
            Unmapped::Discarded => "discarded",
        }
    }
}

/// Written and synced before the first byte reaches the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreStarted {
    pub image: ImageRef,
    pub target: TargetRef,
    /// What the operator's sign-in means (21 CFR 11.50), e.g. "performed by".
    pub meaning: Option<String>,
    /// The work order or reason for the restore.
    pub reason: Option<String>,
    pub mode: RestoreMode,
    pub unmapped: Unmapped,
}

/// Written when a restore ends, whatever the outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreFinished {
    /// Sequence number of the matching `RestoreStarted`.
    pub started_seq: u64,
    pub image: ImageRef,
    pub target: TargetRef,
    pub outcome: RestoreOutcome,
    pub bytes_written: u64,
    /// Bytes already correct on the disk and not rewritten.
    pub bytes_skipped: u64,
    /// (stage name, milliseconds), in order.
    pub stage_millis: Vec<(String, u64)>,
    pub readback_digest: Option<Digest>,
}

/// A sign-in that did not succeed. The secret tried is never recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInFailed {
    pub operator_id: String,
    /// 1 for the first failed attempt in a row, then +1.
    pub attempt: u32,
    /// This failure locked the operator out.
    pub locked: bool,
}

/// The operator a `SignedIn` or `OperatorUnlocked` record is about. For
/// `OperatorUnlocked` the record's own operator is the supervisor who
/// unlocked this one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRef {
    pub operator_id: String,
}

/// The payload of each kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    LogCreated {
        /// The appliance key, repeated so the first signed record names it.
        public_key: Digest,
    },
    RestoreStarted(RestoreStarted),
    RestoreFinished(RestoreFinished),
    ImageVerified {
        image: ImageRef,
        result: CheckResult,
    },
    DiskChecked {
        target: TargetRef,
        result: CheckResult,
    },
    /// A torn tail was copied aside and cut off.
    Recovered {
        offset: u64,
        length: u64,
        sha256: Digest,
        quarantine_file: String,
    },
    OperatorNote {
        text: String,
    },
    SignInFailed(SignInFailed),
    SignedIn(OperatorRef),
    OperatorUnlocked(OperatorRef),
}

// Postcard shapes of the struct-like payload variants.
#[derive(Serialize, Deserialize)]
struct LogCreatedBody {
    public_key: Digest,
}
#[derive(Serialize, Deserialize)]
struct ImageVerifiedBody {
    image: ImageRef,
    result: CheckResult,
}
#[derive(Serialize, Deserialize)]
struct DiskCheckedBody {
    target: TargetRef,
    result: CheckResult,
}
#[derive(Serialize, Deserialize)]
struct RecoveredBody {
    offset: u64,
    length: u64,
    sha256: Digest,
    quarantine_file: String,
}
#[derive(Serialize, Deserialize)]
struct OperatorNoteBody {
    text: String,
}

// Body version 1 shapes, read only: old logs must still verify and show.
#[derive(Deserialize)]
struct SignerRefV1 {
    name: String,
    key_id: String,
    meaning: String,
}
#[derive(Deserialize)]
struct ImageRefV1 {
    uuid: String,
    name: String,
    version: String,
    manifest_digest: Digest,
    signers: Vec<SignerRefV1>,
}
impl From<ImageRefV1> for ImageRef {
    fn from(v1: ImageRefV1) -> Self {
        ImageRef {
            uuid: v1.uuid,
            name: v1.name,
            version: v1.version,
            manifest_digest: v1.manifest_digest,
            signers: v1
                .signers
                .into_iter()
                .map(|s| SignerRef {
                    name: s.name,
                    key_id: s.key_id,
                    meaning: s.meaning,
                    signed_unix: None,
                })
                .collect(),
        }
    }
}
#[derive(Deserialize)]
struct ImageVerifiedV1 {
    image: ImageRefV1,
    result: CheckResult,
}
#[derive(Deserialize)]
struct RestoreStartedV1 {
    image: ImageRefV1,
    target: TargetRef,
}
#[derive(Deserialize)]
struct RestoreFinishedV1 {
    started_seq: u64,
    image: ImageRefV1,
    target: TargetRef,
    outcome: RestoreOutcome,
    bytes_written: u64,
    stage_millis: Vec<(String, u64)>,
    readback_digest: Option<Digest>,
}

impl Payload {
    pub fn kind(&self) -> Kind {
        match self {
            Payload::LogCreated { .. } => Kind::LogCreated,
            Payload::RestoreStarted(_) => Kind::RestoreStarted,
            Payload::RestoreFinished(_) => Kind::RestoreFinished,
            Payload::ImageVerified { .. } => Kind::ImageVerified,
            Payload::DiskChecked { .. } => Kind::DiskChecked,
            Payload::Recovered { .. } => Kind::Recovered,
            Payload::OperatorNote { .. } => Kind::OperatorNote,
            Payload::SignInFailed(_) => Kind::SignInFailed,
            Payload::SignedIn(_) => Kind::SignedIn,
            Payload::OperatorUnlocked(_) => Kind::OperatorUnlocked,
        }
    }

    /// The image the record names, if any.
    pub fn image(&self) -> Option<&ImageRef> {
        match self {
            Payload::RestoreStarted(s) => Some(&s.image),
            Payload::RestoreFinished(f) => Some(&f.image),
            Payload::ImageVerified { image, .. } => Some(image),
            _ => None,
        }
    }

    /// The target disk the record names, if any.
    pub fn target(&self) -> Option<&TargetRef> {
        match self {
            Payload::RestoreStarted(s) => Some(&s.target),
            Payload::RestoreFinished(f) => Some(&f.target),
            Payload::DiskChecked { target, .. } => Some(target),
            _ => None,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
        let bytes = match self.clone() {
            Payload::LogCreated { public_key } => {
                postcard::to_stdvec(&LogCreatedBody { public_key })
            }
            Payload::RestoreStarted(s) => postcard::to_stdvec(&s),
            Payload::RestoreFinished(f) => postcard::to_stdvec(&f),
            Payload::ImageVerified { image, result } => {
                postcard::to_stdvec(&ImageVerifiedBody { image, result })
            }
            Payload::DiskChecked { target, result } => {
                postcard::to_stdvec(&DiskCheckedBody { target, result })
            }
            Payload::Recovered {
                offset,
                length,
                sha256,
                quarantine_file,
            } => postcard::to_stdvec(&RecoveredBody {
                offset,
                length,
                sha256,
                quarantine_file,
            }),
            Payload::OperatorNote { text } => postcard::to_stdvec(&OperatorNoteBody { text }),
            Payload::SignInFailed(f) => postcard::to_stdvec(&f),
            Payload::SignedIn(o) | Payload::OperatorUnlocked(o) => postcard::to_stdvec(&o),
        }?;
        out.extend_from_slice(&bytes);
        Ok(())
    }

    fn decode(body_version: u16, kind: Kind, bytes: &[u8]) -> Result<(Self, &[u8]), BodyDefect> {
        let decode_err = |e: postcard::Error| BodyDefect::Decode(e.to_string());
        if body_version == 1 {
            match kind {
                Kind::RestoreStarted => {
                    let (b, rest) =
                        postcard::take_from_bytes::<RestoreStartedV1>(bytes).map_err(decode_err)?;
                    let started = RestoreStarted {
                        image: b.image.into(),
                        target: b.target,
                        ..Default::default()
                    };
                    return Ok((Payload::RestoreStarted(started), rest));
                }
                Kind::RestoreFinished => {
                    let (b, rest) = postcard::take_from_bytes::<RestoreFinishedV1>(bytes)
                        .map_err(decode_err)?;
                    let finished = RestoreFinished {
                        started_seq: b.started_seq,
                        image: b.image.into(),
                        target: b.target,
                        outcome: b.outcome,
                        bytes_written: b.bytes_written,
                        bytes_skipped: 0,
                        stage_millis: b.stage_millis,
                        readback_digest: b.readback_digest,
                    };
                    return Ok((Payload::RestoreFinished(finished), rest));
                }
                Kind::ImageVerified => {
                    let (b, rest) =
                        postcard::take_from_bytes::<ImageVerifiedV1>(bytes).map_err(decode_err)?;
                    let verified = Payload::ImageVerified {
                        image: b.image.into(),
                        result: b.result,
                    };
                    return Ok((verified, rest));
                }
                Kind::SignInFailed | Kind::SignedIn | Kind::OperatorUnlocked => {
                    return Err(BodyDefect::KindTooNew { kind, body_version })
                }
                _ => {}
            }
        }
        Self::decode_current(kind, bytes).map_err(decode_err)
    }

    fn decode_current(kind: Kind, bytes: &[u8]) -> Result<(Self, &[u8]), postcard::Error> {
        Ok(match kind {
            Kind::LogCreated => {
                let (b, rest) = postcard::take_from_bytes::<LogCreatedBody>(bytes)?;
                (
                    Payload::LogCreated {
                        public_key: b.public_key,
                    },
                    rest,
                )
            }
            Kind::RestoreStarted => {
                let (b, rest) = postcard::take_from_bytes(bytes)?;
                (Payload::RestoreStarted(b), rest)
            }
            Kind::RestoreFinished => {
                let (b, rest) = postcard::take_from_bytes(bytes)?;
                (Payload::RestoreFinished(b), rest)
            }
            Kind::ImageVerified => {
                let (b, rest) = postcard::take_from_bytes::<ImageVerifiedBody>(bytes)?;
                (
                    Payload::ImageVerified {
                        image: b.image,
                        result: b.result,
                    },
                    rest,
                )
            }
            Kind::DiskChecked => {
                let (b, rest) = postcard::take_from_bytes::<DiskCheckedBody>(bytes)?;
                (
                    Payload::DiskChecked {
                        target: b.target,
                        result: b.result,
                    },
                    rest,
                )
            }
            Kind::Recovered => {
                let (b, rest) = postcard::take_from_bytes::<RecoveredBody>(bytes)?;
                (
                    Payload::Recovered {
                        offset: b.offset,
                        length: b.length,
                        sha256: b.sha256,
                        quarantine_file: b.quarantine_file,
                    },
                    rest,
                )
            }
            Kind::OperatorNote => {
                let (b, rest) = postcard::take_from_bytes::<OperatorNoteBody>(bytes)?;
                (Payload::OperatorNote { text: b.text }, rest)
            }
            Kind::SignInFailed => {
                let (b, rest) = postcard::take_from_bytes(bytes)?;
                (Payload::SignInFailed(b), rest)
            }
            Kind::SignedIn => {
                let (b, rest) = postcard::take_from_bytes(bytes)?;
                (Payload::SignedIn(b), rest)
            }
            Kind::OperatorUnlocked => {
                let (b, rest) = postcard::take_from_bytes(bytes)?;
                (Payload::OperatorUnlocked(b), rest)
            }
        })
    }
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// 1 or 2. Fields added in version 2 hold their defaults (`None`,
    /// `Full`, `Left`, 0) in a version 1 record: it did not record them.
    pub body_version: u16,
    pub seq: u64,
    pub kind: Kind,
    pub prev_hash: Digest,
    pub meta: RecordMeta,
    pub payload: Payload,
}

/// Encodes a body: preamble, postcard(meta), postcard(payload).
pub(crate) fn encode_body(
    seq: u64,
    prev_hash: Digest,
    meta: &RecordMeta,
    payload: &Payload,
) -> Result<Vec<u8>, AuditError> {
    let preamble = BodyPreamble {
        version: BODY_VERSION,
        kind: payload.kind() as u16,
        seq,
        prev_hash,
    };
    let mut body = preamble.encode().to_vec();
    let encoded = postcard::to_stdvec(meta).and_then(|m| {
        body.extend_from_slice(&m);
        payload.encode_into(&mut body)
    });
    encoded.map_err(|e| AuditError::Encode {
        seq,
        reason: e.to_string(),
    })?;
    if body.len() > MAX_BODY_LEN {
        return Err(AuditError::RecordTooLarge {
            seq,
            len: body.len(),
        });
    }
    Ok(body)
}

/// Why a structurally sound body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyDefect {
    #[error("the record kind {0} is unknown to this software")]
    UnknownKind(u16),
    #[error("the record body does not decode: {0}")]
    Decode(String),
    #[error("the record body has {0} bytes after its payload")]
    Trailing(usize),
    #[error("the record kind {} does not exist in body version {body_version}", kind.name())]
    KindTooNew { kind: Kind, body_version: u16 },
}

/// Decodes a body whose frame has been checked. Never trusts lengths inside
/// the postcard data beyond the body, which is capped at `MAX_BODY_LEN`.
pub fn decode_body(body: &[u8], preamble: &BodyPreamble) -> Result<Record, BodyDefect> {
    let kind = Kind::from_u16(preamble.kind).ok_or(BodyDefect::UnknownKind(preamble.kind))?;
    let rest = body.get(BODY_PREAMBLE_LEN..).unwrap_or_default();
    let (meta, rest) = postcard::take_from_bytes::<RecordMeta>(rest)
        .map_err(|e| BodyDefect::Decode(e.to_string()))?;
    let (payload, rest) = Payload::decode(preamble.version, kind, rest)?;
    if !rest.is_empty() {
        return Err(BodyDefect::Trailing(rest.len()));
    }
    Ok(Record {
        body_version: preamble.version,
        seq: preamble.seq,
        kind,
        prev_hash: preamble.prev_hash,
        meta,
        payload,
    })
}
