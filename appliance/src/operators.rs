//! The `operators` list in the trust store: who may sign in, and the
//! second identification component (a PIN or password) each must give.
//!
//! 21 CFR Part 11 §11.200(a) asks for two distinct components, so every
//! line holds an id, an Argon2id hash of the operator's PIN, an optional
//! role, and the name:
//!
//! ```text
//! # id   PIN hash (PHC string, no spaces)                  [role]           full name
//! op7    $argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$...                     Alice Jones
//! qa2    $argon2id$v=19$m=19456,t=2,p=1$cGVwcGVyMTI$...    role=supervisor  Quinn Adams
//! ```
//! `reliquary operators add|remove|list|unlock` keeps the file and the
//! lockouts. The PIN itself is never stored, logged or shown.
//!
//! The hash's Argon2 parameters are this project's constants
//! ([`PIN_HASH_PARAMS`]): a line with any other cost is refused before
//! anything is hashed, so the file cannot decide how much memory or time a
//! sign-in takes. Failed sign-ins are counted from the audit log itself
//! ([`Lockout::from_records`]), so a lockout holds across processes and
//! reboots; [`sign_in`] is the one door every front end goes through.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use reliquary_image::TrustStore;

use crate::audit::{
    verify_dir, AuditError, AuditLog, Operator, OperatorRef, Payload, Record, RecordStatus,
    SignInFailed,
};
use crate::exit::ExitClass;

/// The file's name inside the trust-store directory.
pub use reliquary_image::trust::OPERATORS_FILE;
/// The shortest PIN `operators add` accepts unless the trust store's policy
/// asks for more (`min-pin-length N`), and the longest.
pub use reliquary_image::trust::{DEFAULT_MIN_PIN_LEN, MAX_PIN_LEN};
/// The longest operator id.
pub const MAX_ID_LEN: usize = 64;
/// Consecutive failed sign-ins, counted in the audit log, that lock an id
/// until a supervisor unlocks it.
pub const MAX_FAILED_ATTEMPTS: u32 = 5;

/// The only Argon2id cost a PIN hash may have: memory in KiB, passes,
/// lanes. A sign-in hashes once with these (about 19 MiB, tens of
/// milliseconds); the measured offline guessing rate is in STICK.md.
pub const PIN_HASH_PARAMS: PinHashParams = PinHashParams {
    memory_kib: 19_456,
    passes: 2,
    lanes: 1,
};
/// Bytes of the hash output and of the salt `hash_pin` draws.
const HASH_LEN: usize = 32;
const SALT_LEN: usize = 16;

/// The Argon2id cost of a PIN hash, as the PHC string's `m`, `t`, `p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinHashParams {
    pub memory_kib: u32,
    pub passes: u32,
    pub lanes: u32,
}

impl PinHashParams {
    /// The PHC parameter string, `m=…,t=…,p=…`.
    pub fn phc(&self) -> String {
        format!("m={},t={},p={}", self.memory_kib, self.passes, self.lanes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorsError {
    #[error("{path}:{line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "`{0}` is not an operator id: use 1 to {MAX_ID_LEN} letters, digits, `.`, `_`, `-` or `@`"
    )]
    BadId(String),
    #[error("the operator's name must not be empty")]
    EmptyName,
    #[error("operator `{0}` is already listed")]
    Duplicate(String),
    #[error(
        "the PIN must have {min} to {MAX_PIN_LEN} characters and no spaces \
         (the trust store's policy asks for at least {min})"
    )]
    BadPin { min: usize },
    #[error("cannot hash the PIN: {0}")]
    Hash(String),
}

/// Why a sign-in was refused. The words never say which component was
/// wrong, so a guesser learns nothing about which ids exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignInRefusal {
    #[error("the operator id or PIN is wrong")]
    UnknownId,
    #[error("the operator id or PIN is wrong")]
    WrongPin,
    #[error(
        "this id is locked after {MAX_FAILED_ATTEMPTS} failed sign-ins; \
         a supervisor must unlock it (`reliquary operators unlock`)"
    )]
    Locked,
}

/// What an operator may do beyond restoring and checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Technician,
    /// May unlock another operator's id.
    Supervisor,
}

impl Role {
    /// The line's optional field before the name.
    const SUPERVISOR_FIELD: &'static str = "role=supervisor";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "technician" => Some(Role::Technician),
            "supervisor" => Some(Role::Supervisor),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Technician => "technician",
            Role::Supervisor => "supervisor",
        }
    }
}

/// A known operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorEntry {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The Argon2id PHC string of the PIN, with [`PIN_HASH_PARAMS`].
    pub pin_hash: String,
}

/// The operators allowed to sign in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperatorList {
    pub entries: Vec<OperatorEntry>,
}

impl OperatorList {
    /// The list in `trust`'s `operators` file (read, bounded and digested
    /// by the trust store); `Ok(None)` when it has none.
    pub fn from_trust(
        trust: &TrustStore,
        trust_dir: &Path,
    ) -> Result<Option<Self>, OperatorsError> {
        trust
            .operators_text()
            .map(|text| Self::parse(text, &trust_dir.join(OPERATORS_FILE)))
            .transpose()
    }

    /// Parses lines of `ID PIN-HASH [role=supervisor] Full Name`; `path`
    /// only names errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, OperatorsError> {
        let mut entries: Vec<OperatorEntry> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let bad = |reason: String| OperatorsError::Line {
                path: path.to_path_buf(),
                line: n + 1,
                reason,
            };
            // `#` starts a comment only at the start of a line or after
            // a space: PHC strings use `$`, never `#`, but names might.
            let line = match raw.find(" #") {
                Some(at) => &raw[..at],
                None => raw,
            }
            .trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, char::is_whitespace);
            let id = fields.next().unwrap_or_default();
            let hash = fields.next().map(str::trim).unwrap_or_default();
            let rest = fields.next().map(str::trim).unwrap_or_default();
            if !is_valid_id(id) {
                return Err(bad(OperatorsError::BadId(id.to_string()).to_string()));
            }
            check_pin_hash(hash).map_err(|why| {
                bad(format!(
                    "operator `{id}`: {why}; the engineer sets the PIN again on the \
                     workstation with `reliquary operators add --trust DIR {id} --name NAME`"
                ))
            })?;
            let (first, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let (role, name) = match first {
                Role::SUPERVISOR_FIELD => (Role::Supervisor, after.trim()),
                _ if first.starts_with("role=") => {
                    return Err(bad(format!(
                        "operator `{id}` has an unknown role: the only one is `{}`",
                        Role::SUPERVISOR_FIELD
                    )))
                }
                _ => (Role::Technician, rest),
            };
            if name.is_empty() {
                return Err(bad(format!(
                    "operator `{id}` needs a name after the PIN hash"
                )));
            }
            if entries.iter().any(|e| e.id == id) {
                return Err(bad(format!("operator `{id}` is listed twice")));
            }
            entries.push(OperatorEntry {
                id: id.to_string(),
                name: name.to_string(),
                role,
                pin_hash: hash.to_string(),
            });
        }
        Ok(Self { entries })
    }

    pub fn find(&self, id: &str) -> Option<&OperatorEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Checks both components. The PIN is compared by Argon2id only, and an
    /// unknown id costs one hash too, so the time taken does not tell
    /// which ids exist.
    pub fn verify(&self, id: &str, pin: &str) -> Result<&OperatorEntry, SignInRefusal> {
        let Some(entry) = self.find(id) else {
            let mut wasted = [0u8; HASH_LEN];
            // The result is thrown away: only the time it takes matters.
            let _ = pin_hasher().hash_password_into(
                pin.as_bytes(),
                b"reliquary: an id nobody has",
                &mut wasted,
            );
            return Err(SignInRefusal::UnknownId);
        };
        let hash = PasswordHash::new(&entry.pin_hash).map_err(|_| SignInRefusal::WrongPin)?;
        pin_hasher()
            .verify_password(pin.as_bytes(), &hash)
            .map_err(|_| SignInRefusal::WrongPin)?;
        Ok(entry)
    }

    /// Adds an operator with a freshly salted hash of `pin`, which must
    /// have at least `min_pin_len` characters (the trust store's
    /// `min_pin_length`).
    pub fn add(
        &mut self,
        id: &str,
        name: &str,
        role: Role,
        pin: &str,
        min_pin_len: usize,
    ) -> Result<(), OperatorsError> {
        if !is_valid_id(id) {
            return Err(OperatorsError::BadId(id.to_string()));
        }
        let name = name.trim();
        if name.is_empty() || name.contains(['\n', '\r']) {
            return Err(OperatorsError::EmptyName);
        }
        if self.find(id).is_some() {
            return Err(OperatorsError::Duplicate(id.to_string()));
        }
        let min = min_pin_len.max(DEFAULT_MIN_PIN_LEN);
        if !is_valid_pin(pin, min) {
            return Err(OperatorsError::BadPin { min });
        }
        self.entries.push(OperatorEntry {
            id: id.to_string(),
            name: name.to_string(),
            role,
            pin_hash: hash_pin(pin)?,
        });
        Ok(())
    }

    /// Removes `id`; returns whether it was listed.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        self.entries.len() != before
    }

    /// The file's text, one operator a line.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# Reliquary operators: id, Argon2id PIN hash, [role=supervisor], full name.\n",
        );
        out.push_str("# Kept by `reliquary operators add|remove|list`.\n");
        for e in &self.entries {
            let role = match e.role {
                Role::Technician => String::new(),
                Role::Supervisor => format!("{} ", Role::SUPERVISOR_FIELD),
            };
            out.push_str(&format!("{} {} {role}{}\n", e.id, e.pin_hash, e.name));
        }
        out
    }
}

/// Why [`sign_in`] did not let an operator act.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(transparent)]
    List(#[from] OperatorsError),
    #[error("this trust store has an operators list: give the PIN of operator `{0}`")]
    PinRequired(String),
    #[error(
        "`{0}` is not an operator id: use 1 to {MAX_ID_LEN} letters, digits, `.`, `_`, `-` or `@`"
    )]
    BadId(String),
    #[error("operator `{id}` may not sign: {refusal}")]
    Refused {
        id: String,
        refusal: SignInRefusal,
        /// Failed sign-ins of this id in a row, this one included (0 when
        /// no log counts them).
        attempt: u32,
    },
    #[error("the failed sign-in of `{id}` could not be recorded, so nothing is done: {source}")]
    NotRecorded { id: String, source: AuditError },
    #[error("cannot count the failed sign-ins in the audit log: {0}")]
    Log(#[from] AuditError),
    #[error("operator `{0}` is not a supervisor: only a supervisor may unlock an id")]
    NotSupervisor(String),
    #[error("operator `{0}` cannot unlock their own id: another supervisor must")]
    SelfUnlock(String),
    #[error("operator `{0}` is not locked")]
    NotLocked(String),
}

impl SignInError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            SignInError::PinRequired(_) | SignInError::BadId(_) | SignInError::NotLocked(_) => {
                ExitClass::Usage
            }
            // A list this software will not use is refused, never skipped.
            SignInError::List(_)
            | SignInError::Refused { .. }
            | SignInError::NotRecorded { .. }
            | SignInError::NotSupervisor(_)
            | SignInError::SelfUnlock(_) => ExitClass::Refused,
            SignInError::Log(e) => e.exit_class(),
        }
    }
}

/// The operator a command acts as after [`sign_in`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub operator: Operator,
    /// `None` when the trust store lists no operators: any valid id then
    /// acts alone, with the name it gave.
    pub role: Option<Role>,
}

/// The one sign-in of every front end. With an operators list in `trust`,
/// `id` and `pin` must match a line of it; failed sign-ins are counted from
/// `log` and recorded in it (the id, never the PIN), an id with
/// [`MAX_FAILED_ATTEMPTS`] failures in a row is refused without looking at
/// the PIN, and a failure that cannot be recorded is an error of its own.
/// A good sign-in after failed ones is recorded (`SignedIn`), which starts
/// the count again. Without a log (`restore --no-audit`) failures are
/// refused but counted nowhere. Without a list, `name` is kept as given.
pub fn sign_in(
    trust: &TrustStore,
    trust_dir: &Path,
    log: Option<&mut AuditLog>,
    id: &str,
    name: Option<&str>,
    pin: Option<&str>,
) -> Result<SignedIn, SignInError> {
    if !is_valid_id(id) {
        return Err(SignInError::BadId(id.to_string()));
    }
    let Some(list) = OperatorList::from_trust(trust, trust_dir)? else {
        return Ok(SignedIn {
            operator: Operator {
                id: id.to_string(),
                name: name.map(str::to_string),
            },
            role: None,
        });
    };
    let pin = pin.ok_or_else(|| SignInError::PinRequired(id.to_string()))?;
    let failures = match &log {
        Some(log) => Lockout::from_log(log)?.failures(id),
        None => 0,
    };
    let checked = if failures >= MAX_FAILED_ATTEMPTS {
        Err(SignInRefusal::Locked)
    } else {
        list.verify(id, pin)
    };
    let operator = |name: Option<String>| Operator {
        id: id.to_string(),
        name,
    };
    match checked {
        Ok(entry) => {
            let signed_in = SignedIn {
                operator: operator(Some(entry.name.clone())),
                role: Some(entry.role),
            };
            if let (Some(log), true) = (log, failures > 0) {
                log.append(
                    &signed_in.operator,
                    Payload::SignedIn(OperatorRef {
                        operator_id: id.to_string(),
                    }),
                )?;
            }
            Ok(signed_in)
        }
        // A locked id is refused without another record: the lock shows
        // once, in the failure that set it.
        Err(SignInRefusal::Locked) => Err(SignInError::Refused {
            id: id.to_string(),
            refusal: SignInRefusal::Locked,
            attempt: failures,
        }),
        Err(refusal) => {
            let attempt = failures + 1;
            let counted = log.is_some();
            if let Some(log) = log {
                log.append(&operator(None), sign_in_failed(id, attempt))
                    .map_err(|source| SignInError::NotRecorded {
                        id: id.to_string(),
                        source,
                    })?;
            }
            Err(SignInError::Refused {
                id: id.to_string(),
                refusal: if counted && attempt >= MAX_FAILED_ATTEMPTS {
                    SignInRefusal::Locked
                } else {
                    refusal
                },
                attempt,
            })
        }
    }
}

/// The record of a failed sign-in of `id`, the `attempt`-th in a row.
pub fn sign_in_failed(id: &str, attempt: u32) -> Payload {
    Payload::SignInFailed(SignInFailed {
        operator_id: id.to_string(),
        attempt,
        locked: attempt >= MAX_FAILED_ATTEMPTS,
    })
}

/// Lifts the lockout of `locked_id`: `supervisor` signs in (as in
/// [`sign_in`]) and must be another operator with the supervisor role; the
/// unlock is recorded in `log` in the supervisor's name.
pub fn unlock(
    trust: &TrustStore,
    trust_dir: &Path,
    log: &mut AuditLog,
    supervisor: &str,
    pin: Option<&str>,
    locked_id: &str,
) -> Result<SignedIn, SignInError> {
    if !is_valid_id(locked_id) {
        return Err(SignInError::BadId(locked_id.to_string()));
    }
    if supervisor == locked_id {
        return Err(SignInError::SelfUnlock(supervisor.to_string()));
    }
    let signed_in = sign_in(trust, trust_dir, Some(log), supervisor, None, pin)?;
    if signed_in.role != Some(Role::Supervisor) {
        return Err(SignInError::NotSupervisor(supervisor.to_string()));
    }
    if Lockout::from_log(log)?.failures(locked_id) == 0 {
        return Err(SignInError::NotLocked(locked_id.to_string()));
    }
    log.append(
        &signed_in.operator,
        Payload::OperatorUnlocked(OperatorRef {
            operator_id: locked_id.to_string(),
        }),
    )?;
    Ok(signed_in)
}

/// Failed sign-ins in a row per id, as the audit log records them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lockout {
    failures: BTreeMap<String, u32>,
}

impl Lockout {
    /// Counts, for every id, the `SignInFailed` records since its last
    /// `SignedIn` or `OperatorUnlocked`. Only verified records count.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut lockout = Self::default();
        for record in records {
            match &record.payload {
                Payload::SignInFailed(f) => {
                    lockout.record_failure(&f.operator_id);
                }
                Payload::SignedIn(o) | Payload::OperatorUnlocked(o) => {
                    lockout.clear(&o.operator_id)
                }
                _ => {}
            }
        }
        lockout
    }

    /// The counts of the log in `log`'s directory, verified with its key.
    pub fn from_log(log: &AuditLog) -> Result<Self, AuditError> {
        let report = verify_dir(log.dir(), &log.public_key(), None)?;
        Ok(Self::from_records(
            report
                .records
                .iter()
                .filter(|r| r.status == RecordStatus::Verified)
                .filter_map(|r| r.record.as_ref()),
        ))
    }

    pub fn is_locked(&self, id: &str) -> bool {
        self.failures(id) >= MAX_FAILED_ATTEMPTS
    }

    pub fn failures(&self, id: &str) -> u32 {
        self.failures.get(id).copied().unwrap_or(0)
    }

    /// Counts one failure; returns the failures of `id` so far.
    pub fn record_failure(&mut self, id: &str) -> u32 {
        let n = self.failures.entry(id.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// A good sign-in or an unlock starts the count again.
    pub fn clear(&mut self, id: &str) {
        self.failures.remove(id);
    }
}

/// An Argon2id PHC string of `pin`, with a random salt and
/// [`PIN_HASH_PARAMS`]. The length policy is [`OperatorList::add`]'s.
pub fn hash_pin(pin: &str) -> Result<String, OperatorsError> {
    if !is_valid_pin(pin, 1) {
        return Err(OperatorsError::BadPin {
            min: DEFAULT_MIN_PIN_LEN,
        });
    }
    let mut salt = [0u8; SALT_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| OperatorsError::Hash("no randomness for the salt".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| OperatorsError::Hash(e.to_string()))?;
    pin_hasher()
        .hash_password(pin.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| OperatorsError::Hash(e.to_string()))
}

/// Whether `pin` may be set: printable, no spaces, `min` to
/// [`MAX_PIN_LEN`] characters.
pub fn is_valid_pin(pin: &str, min: usize) -> bool {
    (min..=MAX_PIN_LEN).contains(&pin.chars().count()) && pin.chars().all(|c| c.is_ascii_graphic())
}

/// Whether `c` may appear in an operator id.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')
}

pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.chars().all(is_id_char)
}

/// Argon2id with [`PIN_HASH_PARAMS`], and nothing else.
fn pin_hasher() -> Argon2<'static> {
    let p = PIN_HASH_PARAMS;
    // The constants are valid Argon2 parameters (a unit test builds them).
    let params =
        Params::new(p.memory_kib, p.passes, p.lanes, Some(HASH_LEN)).unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Refuses a PHC string that is not Argon2id v19 with exactly
/// [`PIN_HASH_PARAMS`], a 32-byte output and a salt: the text is only
/// looked at, never hashed with, so a hostile cost costs nothing.
fn check_pin_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash)
        .ok()
        .filter(|h| h.algorithm.as_str() == "argon2id")
        .ok_or("there is no Argon2id PIN hash")?;
    let want = PIN_HASH_PARAMS.phc();
    if parsed.version != Some(0x13) || parsed.params.as_str() != want {
        return Err(format!(
            "the PIN hash has Argon2 parameters `v={},{}`; this software accepts only \
             `v=19,{want}`",
            parsed.version.unwrap_or(0),
            parsed.params.as_str()
        ));
    }
    let salt_ok = parsed.salt.is_some_and(|s| (11..=64).contains(&s.len()));
    let output_ok = parsed.hash.is_some_and(|h| h.len() == HASH_LEN);
    if !salt_ok || !output_ok {
        return Err(format!(
            "the PIN hash needs a salt and a {HASH_LEN}-byte output"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::audit::Environment;

    fn two_operators() -> OperatorList {
        let mut list = OperatorList::default();
        list.add("op7", "Alice Jones", Role::Technician, "471100", 6)
            .expect("add");
        list.add("svc-12", "Bob Smith", Role::Supervisor, "s3cret!", 6)
            .expect("add");
        list
    }

    #[test]
    fn the_text_round_trips_and_never_holds_the_pin() {
        let list = two_operators();
        let text = list.to_text();
        assert!(!text.contains("471100") && !text.contains("s3cret!"));
        assert!(text.contains("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(text.contains("role=supervisor Bob Smith"));
        let again = OperatorList::parse(&text, Path::new("operators")).expect("parses");
        assert_eq!(again, list);
        assert_eq!(again.find("svc-12").map(|e| e.role), Some(Role::Supervisor));
        assert_eq!(again.find("op7").map(|e| e.role), Some(Role::Technician));
    }

    #[test]
    fn both_components_are_needed() {
        let list = two_operators();
        assert_eq!(
            list.verify("op7", "471100").map(|e| e.id.as_str()),
            Ok("op7")
        );
        assert_eq!(list.verify("op7", "471200"), Err(SignInRefusal::WrongPin));
        assert_eq!(list.verify("op8", "471100"), Err(SignInRefusal::UnknownId));
        assert_eq!(
            list.verify("svc-12", "471100"),
            Err(SignInRefusal::WrongPin)
        );
        // The technician is told the same thing either way.
        assert_eq!(
            SignInRefusal::UnknownId.to_string(),
            SignInRefusal::WrongPin.to_string()
        );
    }

    #[test]
    fn an_unknown_id_takes_as_long_as_a_known_one() {
        let list = two_operators();
        // The fastest of a few tries, so that another process's load cannot
        // make either side look slow.
        let fastest = |id: &str| {
            (0..5)
                .map(|_| {
                    let started = Instant::now();
                    let _ = list.verify(id, "000000");
                    started.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let (known, unknown) = (fastest("op7"), fastest("nobody"));
        // Both cost an Argon2id hash (tens of milliseconds); without the
        // wasted one an unknown id answered in microseconds, a thousandth of
        // a known one's time.
        assert!(
            unknown > known / 4.0,
            "known {known:.4} s, unknown {unknown:.4} s"
        );
    }

    #[test]
    fn refuses_lines_without_a_hash_or_name_bad_ids_roles_and_duplicates() {
        let hash = hash_pin("123456").expect("hash");
        let err = |text: &str| {
            OperatorList::parse(text, Path::new("operators"))
                .expect_err("refused")
                .to_string()
        };
        assert!(err("op7 Alice Jones\n")
            .contains("operators:1: operator `op7`: there is no Argon2id PIN hash"));
        assert!(err(&format!("op7 {hash}\n")).contains("needs a name"));
        assert!(err(&format!("op7 {hash} role=supervisor\n")).contains("needs a name"));
        assert!(err(&format!("op7 {hash} role=root Al\n")).contains("unknown role"));
        assert!(err(&format!("op/7 {hash} Alice\n")).contains("not an operator id"));
        assert!(err(&format!("op7 {hash} A\nop7 {hash} B\n"))
            .contains("operators:2: operator `op7` is listed twice"));
    }

    #[test]
    fn a_hash_with_any_other_argon2_cost_is_refused_at_once() {
        let hash = hash_pin("123456").expect("hash");
        let ours = PIN_HASH_PARAMS.phc();
        for hostile in [
            "m=4194304,t=2,p=1",
            "m=67108864,t=2,p=1",
            "m=19456,t=100000,p=1",
            "m=19456,t=2,p=255",
            "m=8,t=1,p=1",
            "m=19456,t=2,p=1,keyid=AAAA",
        ] {
            let line = format!("op7 {} Alice\n", hash.replace(&ours, hostile));
            let started = Instant::now();
            let err = OperatorList::parse(&line, Path::new("operators"))
                .expect_err("refused")
                .to_string();
            assert!(started.elapsed().as_millis() < 1000, "{hostile}");
            assert!(err.contains("accepts only `v=19,m=19456,t=2,p=1`"), "{err}");
        }
        let argon2i = hash.replace("$argon2id$", "$argon2i$");
        assert!(OperatorList::parse(&format!("op7 {argon2i} A\n"), Path::new("o")).is_err());
        let v16 = hash.replace("$v=19$", "$v=16$");
        assert!(OperatorList::parse(&format!("op7 {v16} A\n"), Path::new("o")).is_err());
        // The constants themselves are valid Argon2 parameters.
        let p = PIN_HASH_PARAMS;
        assert!(Params::new(p.memory_kib, p.passes, p.lanes, Some(HASH_LEN)).is_ok());
    }

    #[test]
    fn add_refuses_short_pins_duplicates_and_remove_forgets() {
        let hash = hash_pin("123456").expect("hash");
        let mut list = OperatorList::parse(
            &format!("# staff\n\nop7 {hash} Alice Jones # day shift\n"),
            Path::new("operators"),
        )
        .expect("parses");
        assert_eq!(list.entries.len(), 1);
        assert_eq!(list.entries[0].name, "Alice Jones");
        assert!(matches!(
            list.add("op7", "Again", Role::Technician, "999999", 6),
            Err(OperatorsError::Duplicate(_))
        ));
        for short in ["4711", "12345"] {
            assert!(matches!(
                list.add("op8", "X", Role::Technician, short, 6),
                Err(OperatorsError::BadPin { min: 6 })
            ));
        }
        // A policy may ask for more, never for less.
        assert!(matches!(
            list.add("op8", "X", Role::Technician, "123456", 8),
            Err(OperatorsError::BadPin { min: 8 })
        ));
        assert!(matches!(
            list.add("op8", "X", Role::Technician, "4711", 4),
            Err(OperatorsError::BadPin { min: 6 })
        ));
        assert!(list.remove("op7"));
        assert!(!list.remove("op7"));
    }

    fn store_with_operators() -> (tempfile::TempDir, TrustStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        reliquary_image::keys::SigningKey::generate_to_files(&dir.path().join("eng"), Some("Eng"))
            .expect("key");
        std::fs::write(dir.path().join(OPERATORS_FILE), two_operators().to_text()).expect("write");
        let trust = TrustStore::load(dir.path()).expect("trust store");
        (dir, trust)
    }

    #[test]
    fn sign_in_needs_the_pin_only_when_the_trust_store_lists_operators() {
        let dir = tempfile::tempdir().expect("tempdir");
        reliquary_image::keys::SigningKey::generate_to_files(&dir.path().join("eng"), Some("Eng"))
            .expect("key");
        let trust = TrustStore::load(dir.path()).expect("trust store");
        let anyone = sign_in(&trust, dir.path(), None, "anyone", Some("A. N."), None)
            .expect("no list, no PIN");
        assert_eq!(anyone.operator.name.as_deref(), Some("A. N."));
        assert_eq!(anyone.role, None);
        assert!(matches!(
            sign_in(&trust, dir.path(), None, "bad id", None, None),
            Err(SignInError::BadId(_))
        ));
        let (dir, trust) = store_with_operators();
        assert!(matches!(
            sign_in(&trust, dir.path(), None, "op7", None, None),
            Err(SignInError::PinRequired(_))
        ));
        let op7 = sign_in(
            &trust,
            dir.path(),
            None,
            "op7",
            Some("Mallory"),
            Some("471100"),
        )
        .expect("signs in");
        // The list's name, never the one given on the command line.
        assert_eq!(op7.operator.name.as_deref(), Some("Alice Jones"));
        assert!(matches!(
            sign_in(&trust, dir.path(), None, "anyone", None, Some("471100")),
            Err(SignInError::Refused { attempt: 1, .. })
        ));
    }

    #[test]
    fn five_failures_in_the_log_lock_an_id_for_every_later_process_until_a_supervisor_unlocks_it() {
        let (trust_dir, trust) = store_with_operators();
        let audit = tempfile::tempdir().expect("tempdir");
        let audit_dir = audit.path().join("audit");
        drop(AuditLog::init(&audit_dir, None, Environment::system(None)).expect("init"));
        let open = || AuditLog::open(&audit_dir, Environment::system(None)).expect("open");
        let try_pin = |id: &str, pin: &str| {
            // A fresh open each time: nothing is kept between attempts but the log.
            sign_in(
                &trust,
                trust_dir.path(),
                Some(&mut open()),
                id,
                None,
                Some(pin),
            )
        };
        for attempt in 1..MAX_FAILED_ATTEMPTS {
            match try_pin("op7", "000000") {
                Err(SignInError::Refused {
                    refusal: SignInRefusal::WrongPin,
                    attempt: n,
                    ..
                }) => assert_eq!(n, attempt),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            try_pin("op7", "000000"),
            Err(SignInError::Refused {
                refusal: SignInRefusal::Locked,
                attempt: 5,
                ..
            })
        ));
        // The right PIN no longer helps, and nothing more is recorded.
        let size = open().size();
        assert!(matches!(
            try_pin("op7", "471100"),
            Err(SignInError::Refused {
                refusal: SignInRefusal::Locked,
                ..
            })
        ));
        assert_eq!(open().size(), size);
        // Unknown ids lock the same way, so a lock tells nothing either.
        for _ in 0..MAX_FAILED_ATTEMPTS {
            let _ = try_pin("ghost", "000000");
        }
        assert!(Lockout::from_log(&open())
            .expect("count")
            .is_locked("ghost"));
        assert!(!Lockout::from_log(&open())
            .expect("count")
            .is_locked("svc-12"));

        // Only another operator with the supervisor role unlocks.
        let mut log = open();
        assert!(matches!(
            unlock(
                &trust,
                trust_dir.path(),
                &mut log,
                "op7",
                Some("471100"),
                "op7"
            ),
            Err(SignInError::SelfUnlock(_))
        ));
        assert!(matches!(
            unlock(
                &trust,
                trust_dir.path(),
                &mut log,
                "op7",
                Some("471100"),
                "ghost"
            ),
            Err(SignInError::Refused { .. })
        ));
        drop(log);
        let mut log = open();
        let unlocked = unlock(
            &trust,
            trust_dir.path(),
            &mut log,
            "svc-12",
            Some("s3cret!"),
            "op7",
        )
        .expect("unlocked");
        assert_eq!(unlocked.operator.id, "svc-12");
        drop(log);
        let op7 = try_pin("op7", "471100").expect("signs in after the unlock");
        assert_eq!(op7.operator.id, "op7");
        assert!(Lockout::from_log(&open())
            .expect("count")
            .is_locked("ghost"));
    }

    #[test]
    fn a_good_sign_in_after_failures_is_recorded_and_starts_the_count_again() {
        let (trust_dir, trust) = store_with_operators();
        let audit = tempfile::tempdir().expect("tempdir");
        let audit_dir = audit.path().join("audit");
        let mut log = AuditLog::init(&audit_dir, None, Environment::system(None)).expect("init");
        for _ in 0..MAX_FAILED_ATTEMPTS - 1 {
            let _ = sign_in(
                &trust,
                trust_dir.path(),
                Some(&mut log),
                "op7",
                None,
                Some("1"),
            );
        }
        sign_in(
            &trust,
            trust_dir.path(),
            Some(&mut log),
            "op7",
            None,
            Some("471100"),
        )
        .expect("signs in");
        assert_eq!(Lockout::from_log(&log).expect("count").failures("op7"), 0);
        // A good sign-in with no failures before it records nothing.
        let size = log.size();
        sign_in(
            &trust,
            trust_dir.path(),
            Some(&mut log),
            "op7",
            None,
            Some("471100"),
        )
        .expect("signs in");
        assert_eq!(log.size(), size);
    }

    #[test]
    fn a_non_supervisor_cannot_unlock() {
        let dir = tempfile::tempdir().expect("tempdir");
        reliquary_image::keys::SigningKey::generate_to_files(&dir.path().join("eng"), Some("Eng"))
            .expect("key");
        let mut list = two_operators();
        list.add("op9", "Carol", Role::Technician, "999999", 6)
            .expect("add");
        std::fs::write(dir.path().join(OPERATORS_FILE), list.to_text()).expect("write");
        let trust = TrustStore::load(dir.path()).expect("trust store");
        let audit = tempfile::tempdir().expect("tempdir");
        let mut log =
            AuditLog::init(&audit.path().join("a"), None, Environment::system(None)).expect("init");
        for _ in 0..MAX_FAILED_ATTEMPTS {
            let _ = sign_in(&trust, dir.path(), Some(&mut log), "op7", None, Some("1"));
        }
        assert!(matches!(
            unlock(&trust, dir.path(), &mut log, "op9", Some("999999"), "op7"),
            Err(SignInError::NotSupervisor(_))
        ));
        assert!(Lockout::from_log(&log).expect("count").is_locked("op7"));
    }
}
