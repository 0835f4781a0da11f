//! The trust store: trusted public keys and the signature policy.
//!
//! A trust store is either a single `.pub` file or a directory holding
//! `NAME.pub` files and an optional `policy` file of lines:
//!
//! ```text
//! # comments and blank lines are ignored
//! threshold 2
//! revoke-key 0123456789abcdef
//! revoke-image 6f1c1b0e-8d8a-4a43-9d0c-6f5b8f3f9a10
//! min-pin-length 8       # operators' PINs, refused shorter at `operators add`
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::digest::sha256;
use crate::keys::{KeyError, PublicKey};

/// The policy file's name inside a trust-store directory.
pub const POLICY_FILE: &str = "policy";
/// The list of operators allowed to sign in on the stick. The appliance
/// parses it; it is part of the digest because it decides who may act.
pub const OPERATORS_FILE: &str = "operators";
/// Domain separation of the trust-store digest (version 2, canonical).
pub const TRUST_DIGEST_CONTEXT: &[u8] = b"reliquary trust store v2\0";
/// Upper bounds that keep a hostile trust store from exhausting memory.
const MAX_TEXT_FILE_LEN: u64 = 256 << 10;
const MAX_KEYS: usize = 256;
/// The shortest operator PIN without a `min-pin-length` line, and the
/// least that line may ask for.
pub const DEFAULT_MIN_PIN_LEN: usize = 6;
/// The longest PIN or password, so a hash cannot be asked to eat megabytes.
pub const MAX_PIN_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read trust-store file {path}: {source}; the trust store is refused")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("trust store {0} holds no .pub key files")]
    Empty(PathBuf),
    #[error("trust store {path} holds more than {MAX_KEYS} keys")]
    TooManyKeys { path: PathBuf },
    #[error("trust-store file {0} is larger than {MAX_TEXT_FILE_LEN} bytes; it is refused rather than read in part")]
    FileTooLarge(PathBuf),
    #[error(
        "{0} may be changed by any user of this machine (it is world-writable); \
         the trust store is refused: `chmod o-w` it"
    )]
    WorldWritable(PathBuf),
    #[error("{path}:{line}: {reason}")]
    Policy {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// A trusted key with the name its file gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub key: PublicKey,
    pub name: String,
}

/// Trusted keys plus the signature policy.
#[derive(Debug, Clone)]
pub struct TrustStore {
    keys: BTreeMap<String, TrustedKey>,
    threshold: usize,
    revoked_keys: BTreeSet<String>,
    revoked_images: BTreeSet<Uuid>,
    min_pin_length: usize,
    digest: [u8; 32],
    operators: Option<String>,
}

impl TrustStore {
    /// Loads a `.pub` file or a trust-store directory.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let read_err = |source| TrustError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let mut store = TrustStore::empty();
        // The digest covers every file that decides trust, keys in name order.
        let mut digest_input = DigestInput::default();
        if meta.is_dir() {
            refuse_world_writable(path, &meta)?;
            let mut names = Vec::new();
            for entry in std::fs::read_dir(path).map_err(read_err)? {
                names.push(entry.map_err(read_err)?.path());
            }
            names.sort();
            for file in names
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            {
                if store.keys.len() == MAX_KEYS {
                    return Err(TrustError::TooManyKeys {
                        path: path.to_path_buf(),
                    });
                }
                store.add_key_file(file, &mut digest_input)?;
            }
            let policy = path.join(POLICY_FILE);
            if let Some(text) = read_optional_text(&policy)? {
                store.apply_policy(&text, &policy)?;
                digest_input.policy = Some(text);
            }
            store.operators = read_optional_text(&path.join(OPERATORS_FILE))?;
        } else {
            store.add_key_file(path, &mut digest_input)?;
        }
        if store.keys.is_empty() {
            return Err(TrustError::Empty(path.to_path_buf()));
        }
        digest_input.operators = store.operators.as_deref();
        store.digest = digest_input.digest();
        Ok(store)
    }

    /// No keys, the default policy, no operators.
    fn empty() -> Self {
        TrustStore {
            keys: BTreeMap::new(),
            threshold: 1,
            revoked_keys: BTreeSet::new(),
            revoked_images: BTreeSet::new(),
            min_pin_length: DEFAULT_MIN_PIN_LEN,
            digest: [0; 32],
            operators: None,
        }
    }

    /// The `min-pin-length` of the policy in trust-store directory `dir`
    /// (the default without a policy or line), read without its keys: a
    /// list of operators may be kept before the keys arrive.
    pub fn min_pin_length_of(dir: &Path) -> Result<usize, TrustError> {
        let mut store = TrustStore::empty();
        let policy = dir.join(POLICY_FILE);
        if let Some(text) = read_optional_text(&policy)? {
            store.apply_policy(&text, &policy)?;
        }
        Ok(store.min_pin_length)
    }

    fn add_key_file(
        &mut self,
        file: &Path,
        digest_input: &mut DigestInput,
    ) -> Result<(), TrustError> {
        let (key, name) = PublicKey::load(file)?;
        let name = name.unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        digest_input.keys.push((*key.as_bytes(), name.clone()));
        self.keys.insert(key.key_id(), TrustedKey { key, name });
        Ok(())
    }

    fn apply_policy(&mut self, text: &str, path: &Path) -> Result<(), TrustError> {
        for (n, raw) in text.lines().enumerate() {
            let bad = |reason: String| TrustError::Policy {
                path: path.to_path_buf(),
                line: n + 1,
                reason,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (word, value) = line
                .split_once(char::is_whitespace)
                .map(|(w, v)| (w, v.trim()))
                .ok_or_else(|| bad(format!("`{line}` needs a value")))?;
            match word {
                "threshold" => {
                    let threshold: usize = value
                        .parse()
                        .ok()
                        .filter(|t| (1..=MAX_KEYS).contains(t))
                        .ok_or_else(|| {
                            bad(format!("threshold `{value}` must be 1 to {MAX_KEYS}"))
                        })?;
                    self.threshold = threshold;
                }
                "revoke-key" => {
                    if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(bad(format!("`{value}` is not a 16-hex-digit key id")));
                    }
                    self.revoked_keys.insert(value.to_ascii_lowercase());
                }
                "revoke-image" => {
                    let uuid = Uuid::parse_str(value)
                        .map_err(|_| bad(format!("`{value}` is not an image UUID")))?;
                    self.revoked_images.insert(uuid);
                }
                "min-pin-length" => {
                    self.min_pin_length = value
                        .parse()
                        .ok()
                        .filter(|n| (DEFAULT_MIN_PIN_LEN..=MAX_PIN_LEN).contains(n))
                        .ok_or_else(|| {
                            bad(format!(
                                "min-pin-length `{value}` must be {DEFAULT_MIN_PIN_LEN} to {MAX_PIN_LEN}"
                            ))
                        })?;
                }
                other => return Err(bad(format!("unknown policy word `{other}`"))),
            }
        }
        Ok(())
    }

    /// The trusted key with this key id, if any.
    /// Distinct trusted keys an image's signatures must come from.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Whether the policy revokes the key with this id.
    pub fn is_key_revoked(&self, key_id: &str) -> bool {
        self.revoked_keys.contains(key_id)
    }

    /// Whether the policy revokes the image with this UUID.
    pub fn is_image_revoked(&self, image: &Uuid) -> bool {
        self.revoked_images.contains(image)
    }

    /// The shortest PIN `operators add` accepts: the policy's
    /// `min-pin-length`, or [`DEFAULT_MIN_PIN_LEN`].
    pub fn min_pin_length(&self) -> usize {
        self.min_pin_length
    }

    pub fn key(&self, key_id: &str) -> Option<&TrustedKey> {
        self.keys.get(key_id)
    }

    pub fn keys(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.values()
    }

    /// The text of the `operators` file, exactly as the digest covers it;
    /// `None` when the store has none.
    pub fn operators_text(&self) -> Option<&str> {
        self.operators.as_deref()
    }

    /// The canonical digest of the keys, policy and operators, recorded in
    /// audit records (see [`DigestInput`]).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }
}

/// What the trust-store digest covers. The digest is SHA-256 over
/// `TRUST_DIGEST_CONTEXT`, the number of keys (u64 LE), each key as its 32
/// bytes plus its length-prefixed name, then the policy and the operators
/// texts, each as a presence byte (0 or 1) plus, when present, the
/// length-prefixed text. Lengths are u64 LE. Every field has its length,
/// so no two different stores share an encoding. (Version 1 concatenated
/// the fields without lengths: a key named `Xpolicyrevoke-image …` digested
/// like a real revocation.)
#[derive(Debug, Default)]
struct DigestInput<'a> {
    /// (public key, signer name), in key-file name order.
    keys: Vec<([u8; 32], String)>,
    policy: Option<String>,
    operators: Option<&'a str>,
}

impl DigestInput<'_> {
    fn digest(&self) -> [u8; 32] {
        fn text(out: &mut Vec<u8>, t: &str) {
            out.extend_from_slice(&(t.len() as u64).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        }
        fn optional(out: &mut Vec<u8>, t: Option<&str>) {
            out.push(u8::from(t.is_some()));
            if let Some(t) = t {
                text(out, t);
            }
        }
        let mut bytes = TRUST_DIGEST_CONTEXT.to_vec();
        bytes.extend_from_slice(&(self.keys.len() as u64).to_le_bytes());
        for (key, name) in &self.keys {
            bytes.extend_from_slice(key);
            text(&mut bytes, name);
        }
        optional(&mut bytes, self.policy.as_deref());
        optional(&mut bytes, self.operators);
        sha256(&bytes)
    }
}

/// Reads `policy` or `operators`. Absent is `None`; an entry that exists in
/// any other form than a readable regular file (a symbolic link, dangling or
/// not, a FIFO, an unreadable file) refuses the store: reading it as "no
/// policy" would silently drop revocations and the threshold.
fn read_optional_text(path: &Path) -> Result<Option<String>, TrustError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_text(path).map(Some),
    }
}

fn read_text(path: &Path) -> Result<String, TrustError> {
    use std::io::Read;
    let read_err = |source| TrustError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = crate::regular_file::open_no_symlink(path).map_err(read_err)?;
    refuse_world_writable(path, &file.metadata().map_err(read_err)?)?;
    let mut text = String::new();
    // Read one byte more than the limit: a longer file is refused rather
    // than silently cut, which could drop the revocations at its end.
    file.take(MAX_TEXT_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_TEXT_FILE_LEN {
        return Err(TrustError::FileTooLarge(path.to_path_buf()));
    }
    Ok(text)
}

/// Anyone on the machine could rewrite who is trusted, or who may sign in.
fn refuse_world_writable(path: &Path, meta: &std::fs::Metadata) -> Result<(), TrustError> {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(TrustError::WorldWritable(path.to_path_buf()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;

    fn store_with(files: &[(&str, String)]) -> (tempfile::TempDir, Result<TrustStore, TrustError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        SigningKey::generate_to_files(&dir.path().join("eng"), Some("Eng")).expect("key");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let store = TrustStore::load(dir.path());
        (dir, store)
    }

    #[test]
    fn the_operators_text_is_kept_and_covered_by_the_digest() {
        let (_dir, plain) = store_with(&[]);
        let plain = plain.expect("loads");
        assert_eq!(plain.operators_text(), None);
        let (_dir, listed) = store_with(&[(OPERATORS_FILE, "op7 Alice Jones\n".into())]);
        let listed = listed.expect("loads");
        assert_eq!(listed.operators_text(), Some("op7 Alice Jones\n"));
        assert_ne!(listed.digest(), plain.digest());
    }

    /// The version 1 digest: fields concatenated without lengths.
    fn version_1_digest(keys: &[(&PublicKey, &str)], policy: Option<&str>) -> [u8; 32] {
        let mut input = Vec::new();
        for (key, name) in keys {
            input.extend_from_slice(key.as_bytes());
            input.extend_from_slice(name.as_bytes());
        }
        if let Some(text) = policy {
            input.extend_from_slice(POLICY_FILE.as_bytes());
            input.extend_from_slice(text.as_bytes());
        }
        sha256(&input)
    }

    #[test]
    fn stores_that_collide_under_the_version_1_digest_digest_differently() {
        let revocation = "revoke-image 6f1c1b0e-8d8a-4a43-9d0c-6f5b8f3f9a10";
        let key = SigningKey::generate_to_files(
            &tempfile::tempdir().expect("tempdir").path().join("k"),
            None,
        )
        .expect("key")
        .public_key();
        let store = |files: &[(&str, String)]| {
            let dir = tempfile::tempdir().expect("tempdir");
            for (name, text) in files {
                std::fs::write(dir.path().join(name), text).expect("write");
            }
            let store = TrustStore::load(dir.path()).expect("loads");
            (dir, store)
        };
        // A: a key whose name spells "policy" and a revocation; no policy.
        let forged_name = format!("X{POLICY_FILE}{revocation}");
        let (_a_dir, a) = store(&[("eng.pub", key.to_text(Some(&forged_name)))]);
        // B: the same key named "X" and a real revocation in force.
        let (_b_dir, b) = store(&[
            ("eng.pub", key.to_text(Some("X"))),
            (POLICY_FILE, revocation.to_string()),
        ]);
        assert!(a.revoked_images.is_empty());
        assert_eq!(b.revoked_images.len(), 1);
        assert_eq!(
            version_1_digest(&[(&key, &forged_name)], None),
            version_1_digest(&[(&key, "X")], Some(revocation)),
            "the two stores are built to collide under the version 1 digest"
        );
        assert_ne!(a.digest(), b.digest());
    }

    fn refused_naming(dir: &Path, file: &str) -> String {
        let err = TrustStore::load(dir).expect_err("the store is refused");
        let text = err.to_string();
        assert!(
            text.contains(&dir.join(file).display().to_string()),
            "{text}"
        );
        text
    }

    #[test]
    fn a_policy_or_operators_entry_that_is_not_a_regular_file_refuses_the_store() {
        let (dir, store) = store_with(&[]);
        store.expect("loads without a policy");
        std::os::unix::fs::symlink("/nonexistent/policy", dir.path().join(POLICY_FILE))
            .expect("symlink");
        assert!(refused_naming(dir.path(), POLICY_FILE).contains("symbolic link"));

        let (dir, _) = store_with(&[("real-policy", "threshold 1\n".into())]);
        std::os::unix::fs::symlink(dir.path().join("real-policy"), dir.path().join(POLICY_FILE))
            .expect("symlink");
        assert!(refused_naming(dir.path(), POLICY_FILE).contains("symbolic link"));

        let (dir, _) = store_with(&[]);
        std::fs::create_dir(dir.path().join(OPERATORS_FILE)).expect("mkdir");
        assert!(refused_naming(dir.path(), OPERATORS_FILE).contains("directory"));
    }

    #[test]
    fn an_operators_list_over_the_limit_is_refused_not_cut() {
        let line = "op7 Alice Jones\n";
        let body = line.repeat(MAX_TEXT_FILE_LEN as usize / line.len() + 1);
        let (_dir, store) = store_with(&[(OPERATORS_FILE, body)]);
        assert!(matches!(store, Err(TrustError::FileTooLarge(_))));
    }

    #[test]
    fn a_world_writable_directory_policy_or_operators_file_refuses_the_store() {
        use std::os::unix::fs::PermissionsExt;
        let world_writable = |path: &Path| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod")
        };
        let (dir, store) = store_with(&[]);
        store.expect("loads");
        world_writable(dir.path());
        let err = TrustStore::load(dir.path()).expect_err("refused");
        assert!(
            matches!(&err, TrustError::WorldWritable(p) if p == dir.path()),
            "{err}"
        );
        for file in [POLICY_FILE, OPERATORS_FILE] {
            let (dir, _) = store_with(&[(file, "\n".into())]);
            world_writable(&dir.path().join(file));
            assert!(refused_naming(dir.path(), file).contains("world-writable"));
        }
    }

    #[test]
    fn min_pin_length_may_raise_the_default_never_lower_it() {
        let (_dir, store) = store_with(&[]);
        assert_eq!(store.expect("loads").min_pin_length(), DEFAULT_MIN_PIN_LEN);
        let (_dir, store) = store_with(&[(POLICY_FILE, "min-pin-length 10\n".into())]);
        assert_eq!(store.expect("loads").min_pin_length(), 10);
        for short in ["4", "5", "129", "six"] {
            let (_dir, store) = store_with(&[(POLICY_FILE, format!("min-pin-length {short}\n"))]);
            let err = store.expect_err("refused").to_string();
            assert!(err.contains("must be 6 to 128"), "{err}");
        }
    }
}
