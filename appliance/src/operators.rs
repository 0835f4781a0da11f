//! The `operators` list in the trust store: who may sign in, and the
//! second identification component (a PIN or password) each must give.
//!
//! 21 CFR Part 11 §11.200(a) asks for two distinct components, so every
//! line holds an id, an Argon2id hash of the operator's PIN, and the name:
//!
//! ```text
//! # id   PIN hash (PHC string, no spaces)                        full name
//! op7    $argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$...          Alice Jones
//! ```
//! `reliquary operators add|remove|list` keeps the file. The PIN itself is
//! never stored, logged or shown.

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use reliquary_image::TrustStore;

/// The file's name inside the trust-store directory.
pub use reliquary_image::trust::OPERATORS_FILE;
/// The longest operator id.
pub const MAX_ID_LEN: usize = 64;
/// The shortest PIN or password accepted by `reliquary operators add`.
pub const MIN_PIN_LEN: usize = 4;
/// The longest PIN or password, so a hash cannot be asked to eat megabytes.
pub const MAX_PIN_LEN: usize = 128;
/// Failed sign-ins after which an id is locked for the rest of the session.
pub const MAX_FAILED_ATTEMPTS: u32 = 5;

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
    #[error("the PIN must have {MIN_PIN_LEN} to {MAX_PIN_LEN} characters and no spaces")]
    BadPin,
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
    #[error("this id is locked after {MAX_FAILED_ATTEMPTS} failed sign-ins; restart the stick")]
    Locked,
}

/// A known operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorEntry {
    pub id: String,
    pub name: String,
    /// The Argon2id PHC string of the PIN.
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

    /// Parses lines of `ID PIN-HASH Full Name`; `path` only names errors.
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
            let name = fields.next().map(str::trim).unwrap_or_default();
            if !is_valid_id(id) {
                return Err(bad(OperatorsError::BadId(id.to_string()).to_string()));
            }
            if !hash.starts_with("$argon2id$") || PasswordHash::new(hash).is_err() {
                return Err(bad(format!(
                    "operator `{id}` has no Argon2id PIN hash; the engineer sets one on the \
                     workstation with `reliquary operators add --trust DIR {id} --name NAME`"
                )));
            }
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
                pin_hash: hash.to_string(),
            });
        }
        Ok(Self { entries })
    }

    pub fn find(&self, id: &str) -> Option<&OperatorEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Checks both components. The PIN is compared by Argon2id only.
    pub fn verify(&self, id: &str, pin: &str) -> Result<&OperatorEntry, SignInRefusal> {
        let entry = self.find(id).ok_or(SignInRefusal::UnknownId)?;
        let hash = PasswordHash::new(&entry.pin_hash).map_err(|_| SignInRefusal::WrongPin)?;
        Argon2::default()
            .verify_password(pin.as_bytes(), &hash)
            .map_err(|_| SignInRefusal::WrongPin)?;
        Ok(entry)
    }

    /// Adds an operator with a freshly salted hash of `pin`.
    pub fn add(&mut self, id: &str, name: &str, pin: &str) -> Result<(), OperatorsError> {
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
        self.entries.push(OperatorEntry {
            id: id.to_string(),
            name: name.to_string(),
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
        let mut out = String::from("# Reliquary operators: id, Argon2id PIN hash, full name.\n");
        out.push_str("# Kept by `reliquary operators add|remove|list`.\n");
        for e in &self.entries {
            out.push_str(&format!("{} {} {}\n", e.id, e.pin_hash, e.name));
        }
        out
    }
}

/// Why a front end without a sign-in screen (the CLI's `restore`) may not
/// act for an operator.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error(transparent)]
    List(#[from] OperatorsError),
    #[error("this trust store has an operators list: give the PIN of operator `{0}`")]
    PinRequired(String),
    #[error("operator `{id}` may not sign: {refusal}")]
    Refused { id: String, refusal: SignInRefusal },
    #[error(
        "`{0}` is not an operator id: use 1 to {MAX_ID_LEN} letters, digits, `.`, `_`, `-` or `@`"
    )]
    BadId(String),
}

/// Checks `id` (and its PIN) against the trust store's operators list, as
/// the TUI's sign-in does. Returns the operator's name from the list, or
/// `None` when the trust store has no list (any valid id then acts alone).
pub fn authorize(
    trust: &TrustStore,
    trust_dir: &Path,
    id: &str,
    pin: Option<&str>,
) -> Result<Option<String>, AuthorizeError> {
    if !is_valid_id(id) {
        return Err(AuthorizeError::BadId(id.to_string()));
    }
    let Some(list) = OperatorList::from_trust(trust, trust_dir)? else {
        return Ok(None);
    };
    let pin = pin.ok_or_else(|| AuthorizeError::PinRequired(id.to_string()))?;
    list.verify(id, pin)
        .map(|entry| Some(entry.name.clone()))
        .map_err(|refusal| AuthorizeError::Refused {
            id: id.to_string(),
            refusal,
        })
}

/// Failed sign-ins per id, for one session of the stick.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lockout {
    failures: Vec<(String, u32)>,
}

impl Lockout {
    pub fn is_locked(&self, id: &str) -> bool {
        self.failures(id) >= MAX_FAILED_ATTEMPTS
    }

    pub fn failures(&self, id: &str) -> u32 {
        self.failures
            .iter()
            .find(|(known, _)| known == id)
            .map_or(0, |(_, n)| *n)
    }

    /// Counts one failure; returns the failures of `id` so far.
    pub fn record_failure(&mut self, id: &str) -> u32 {
        match self.failures.iter_mut().find(|(known, _)| known == id) {
            Some((_, n)) => {
                *n = n.saturating_add(1);
                *n
            }
            None => {
                self.failures.push((id.to_string(), 1));
                1
            }
        }
    }

    /// A good sign-in starts the count again.
    pub fn clear(&mut self, id: &str) {
        self.failures.retain(|(known, _)| known != id);
    }
}

/// An Argon2id PHC string of `pin`, with a random salt.
pub fn hash_pin(pin: &str) -> Result<String, OperatorsError> {
    if !is_valid_pin(pin) {
        return Err(OperatorsError::BadPin);
    }
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| OperatorsError::Hash("no randomness for the salt".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| OperatorsError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(pin.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| OperatorsError::Hash(e.to_string()))
}

/// Whether `pin` may be set: printable, no spaces, of a sane length.
pub fn is_valid_pin(pin: &str) -> bool {
    (MIN_PIN_LEN..=MAX_PIN_LEN).contains(&pin.chars().count())
        && pin.chars().all(|c| c.is_ascii_graphic())
}

/// Whether `c` may appear in an operator id.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')
}

pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.chars().all(is_id_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_operators() -> OperatorList {
        let mut list = OperatorList::default();
        list.add("op7", "Alice Jones", "4711").expect("add");
        list.add("svc-12", "Bob Smith", "s3cret!").expect("add");
        list
    }

    #[test]
    fn the_text_round_trips_and_never_holds_the_pin() {
        let list = two_operators();
        let text = list.to_text();
        assert!(!text.contains("4711") && !text.contains("s3cret!"));
        assert!(text.contains("$argon2id$"));
        let again = OperatorList::parse(&text, Path::new("operators")).expect("parses");
        assert_eq!(again, list);
        assert_eq!(
            again.find("op7").map(|e| e.name.as_str()),
            Some("Alice Jones")
        );
    }

    #[test]
    fn both_components_are_needed() {
        let list = two_operators();
        assert_eq!(list.verify("op7", "4711").map(|e| e.id.as_str()), Ok("op7"));
        assert_eq!(list.verify("op7", "4712"), Err(SignInRefusal::WrongPin));
        assert_eq!(list.verify("op8", "4711"), Err(SignInRefusal::UnknownId));
        assert_eq!(list.verify("svc-12", "4711"), Err(SignInRefusal::WrongPin));
        // The technician is told the same thing either way.
        assert_eq!(
            SignInRefusal::UnknownId.to_string(),
            SignInRefusal::WrongPin.to_string()
        );
    }

    #[test]
    fn refuses_lines_without_a_hash_or_name_bad_ids_and_duplicates() {
        let hash = hash_pin("1234").expect("hash");
        let err = |text: &str| {
            OperatorList::parse(text, Path::new("operators"))
                .expect_err("refused")
                .to_string()
        };
        assert!(err("op7 Alice Jones\n").contains("operators:1: operator `op7` has no Argon2id"));
        assert!(err(&format!("op7 {hash}\n")).contains("needs a name"));
        assert!(err(&format!("op/7 {hash} Alice\n")).contains("not an operator id"));
        assert!(err(&format!("op7 {hash} A\nop7 {hash} B\n"))
            .contains("operators:2: operator `op7` is listed twice"));
    }

    #[test]
    fn comments_blank_lines_add_and_remove() {
        let hash = hash_pin("1234").expect("hash");
        let mut list = OperatorList::parse(
            &format!("# staff\n\nop7 {hash} Alice Jones # day shift\n"),
            Path::new("operators"),
        )
        .expect("parses");
        assert_eq!(list.entries.len(), 1);
        assert_eq!(list.entries[0].name, "Alice Jones");
        assert!(matches!(
            list.add("op7", "Again", "9999"),
            Err(OperatorsError::Duplicate(_))
        ));
        assert!(matches!(
            list.add("op8", "X", "12"),
            Err(OperatorsError::BadPin)
        ));
        assert!(list.remove("op7"));
        assert!(!list.remove("op7"));
    }

    #[test]
    fn authorize_needs_the_pin_only_when_the_trust_store_lists_operators() {
        let dir = tempfile::tempdir().expect("tempdir");
        reliquary_image::keys::SigningKey::generate_to_files(&dir.path().join("eng"), Some("Eng"))
            .expect("key");
        let trust = TrustStore::load(dir.path()).expect("trust store");
        assert_eq!(
            authorize(&trust, dir.path(), "anyone", None).ok(),
            Some(None)
        );
        assert!(matches!(
            authorize(&trust, dir.path(), "bad id with spaces", None),
            Err(AuthorizeError::BadId(_))
        ));
        std::fs::write(dir.path().join(OPERATORS_FILE), two_operators().to_text()).expect("write");
        let trust = TrustStore::load(dir.path()).expect("trust store");
        assert!(matches!(
            authorize(&trust, dir.path(), "op7", None),
            Err(AuthorizeError::PinRequired(_))
        ));
        assert_eq!(
            authorize(&trust, dir.path(), "op7", Some("4711")).ok(),
            Some(Some("Alice Jones".to_string()))
        );
        assert!(matches!(
            authorize(&trust, dir.path(), "anyone", Some("4711")),
            Err(AuthorizeError::Refused { .. })
        ));
    }

    #[test]
    fn five_failures_lock_an_id_and_only_that_id() {
        let mut lockout = Lockout::default();
        for n in 1..=MAX_FAILED_ATTEMPTS {
            assert!(!lockout.is_locked("op7"));
            assert_eq!(lockout.record_failure("op7"), n);
        }
        assert!(lockout.is_locked("op7"));
        assert!(!lockout.is_locked("svc-12"));
    }
}
