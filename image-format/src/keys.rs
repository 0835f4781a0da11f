//! Ed25519 keys: PKCS#8 private key files and `.pub` public key files.
//!
//! A public key file is one line of text:
//! `reliquary-ed25519 <64 hex digits> [signer name]`.
//! The key id is the first 16 hex digits of the SHA-256 of the 32 key bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use curve25519_dalek::edwards::CompressedEdwardsY;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// The first word of a public key file.
pub const PUBLIC_KEY_TAG: &str = "reliquary-ed25519";
/// Upper bound on the size of a key file we are willing to read.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// Errors from loading, parsing or generating keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to overwrite existing key file {0}")]
    Exists(PathBuf),
    #[error("key file {0} is larger than {MAX_KEY_FILE_LEN} bytes")]
    TooLarge(PathBuf),
    #[error("{path} is not a Reliquary private key (PKCS#8 Ed25519): {reason}")]
    BadPrivateKey { path: PathBuf, reason: String },
    #[error("{path} is not a Reliquary public key: {reason}")]
    BadPublicKey { path: PathBuf, reason: String },
    #[error("public key {key_id} is malformed: {reason}")]
    RejectedPublicKey {
        key_id: String,
        reason: &'static str,
    },
    #[error("the system random number generator failed")]
    Random,
}

/// A 32-byte Ed25519 public key that has been checked to be a valid,
/// canonical, non-small-order curve point.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Validates raw key bytes: the point must decode, be canonically
    /// encoded, and lie in the prime-order subgroup (torsion-free, which also
    /// excludes small order). `ring` accepts some keys outside it, and for
    /// such keys the cofactored and cofactorless verification equations can
    /// disagree; with a torsion-free key only the signer could make them
    /// disagree (see AUDIT-LOG.md, "Verification").
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        let key_id = key_id_of(&bytes);
        let point = CompressedEdwardsY(bytes)
            .decompress()
            .ok_or(KeyError::RejectedPublicKey {
                key_id: key_id.clone(),
                reason: "not a point on the curve",
            })?;
        if point.compress().0 != bytes {
            return Err(KeyError::RejectedPublicKey {
                key_id,
                reason: "non-canonical encoding",
            });
        }
        if point.is_small_order() {
            return Err(KeyError::RejectedPublicKey {
                key_id,
                reason: "small-order point",
            });
        }
        if !point.is_torsion_free() {
            return Err(KeyError::RejectedPublicKey {
                key_id,
                reason: "the point has a small-order (torsion) component",
            });
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// First 16 hex digits of SHA-256 over the key bytes.
    pub fn key_id(&self) -> String {
        key_id_of(&self.0)
    }

    /// Checks an Ed25519 signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }

    /// Parses the text of a `.pub` file; returns the key and the optional name.
    pub fn parse_text(text: &str, path: &Path) -> Result<(Self, Option<String>), KeyError> {
        let bad = |reason: &str| KeyError::BadPublicKey {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let line = text
            .lines()
            .next()
            .ok_or_else(|| bad("the file is empty"))?;
        let mut words = line.splitn(3, ' ');
        if words.next() != Some(PUBLIC_KEY_TAG) {
            return Err(bad(&format!("the line must start with `{PUBLIC_KEY_TAG}`")));
        }
        let hex_key = words
            .next()
            .ok_or_else(|| bad("the key digits are missing"))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_key, &mut bytes)
            .map_err(|_| bad("the key must be exactly 64 hex digits"))?;
        let name = words
            .next()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        Ok((Self::from_bytes(bytes)?, name))
    }

    /// Reads a `.pub` file.
    pub fn load(path: &Path) -> Result<(Self, Option<String>), KeyError> {
        let bytes = read_bounded(path)?;
        let text = String::from_utf8(bytes).map_err(|_| KeyError::BadPublicKey {
            path: path.to_path_buf(),
            reason: "not UTF-8 text".into(),
        })?;
        Self::parse_text(&text, path)
    }

    /// The one-line text form written to `.pub` files.
    pub fn to_text(&self, name: Option<&str>) -> String {
        match name {
            Some(name) => format!("{PUBLIC_KEY_TAG} {} {name}\n", hex::encode(self.0)),
            None => format!("{PUBLIC_KEY_TAG} {}\n", hex::encode(self.0)),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

/// An Ed25519 private key loaded from a PKCS#8 file.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl SigningKey {
    /// Generates a new key and returns it with its PKCS#8 encoding.
    pub fn generate() -> Result<(Self, Vec<u8>), KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        let key = Self::from_pkcs8(pkcs8.as_ref(), Path::new("<generated>"))?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    pub fn from_pkcs8(der: &[u8], path: &Path) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| {
            KeyError::BadPrivateKey {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(pair.public_key().as_ref());
        let public = PublicKey::from_bytes(bytes)?;
        Ok(Self { pair, public })
    }

    /// Reads a PKCS#8 private key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_pkcs8(&read_bounded(path)?, path)
    }

    /// Generates a key pair, writing `path` (mode 0600) and `path.pub`.
    /// Refuses to overwrite either file.
    pub fn generate_to_files(path: &Path, name: Option<&str>) -> Result<Self, KeyError> {
        let pub_path = public_key_path(path);
        for p in [path, pub_path.as_path()] {
            if p.exists() {
                return Err(KeyError::Exists(p.to_path_buf()));
            }
        }
        let (key, pkcs8) = Self::generate()?;
        write_new(path, &pkcs8, 0o600)?;
        write_new(&pub_path, key.public.to_text(name).as_bytes(), 0o644)?;
        Ok(key)
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public.key_id())
    }
}

/// `key` -> `key.pub`.
pub fn public_key_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn key_id_of(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    hex::encode(&digest.as_ref()[..8])
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = crate::regular_file::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(KeyError::TooLarge(path.to_path_buf()));
    }
    Ok(bytes)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write_err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(write_err)?;
    file.write_all(bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_text() {
        let (key, _) = SigningKey::generate().unwrap();
        let text = key.public_key().to_text(Some("QA lead"));
        let (parsed, name) = PublicKey::parse_text(&text, Path::new("x.pub")).unwrap();
        assert_eq!(parsed, key.public_key());
        assert_eq!(name.as_deref(), Some("QA lead"));
        let sig = key.sign(b"hello");
        assert!(parsed.verify(b"hello", &sig));
        assert!(!parsed.verify(b"hellO", &sig));
    }

    #[test]
    fn small_order_and_off_curve_keys_are_rejected() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            PublicKey::from_bytes(identity),
            Err(KeyError::RejectedPublicKey {
                reason: "small-order point",
                ..
            })
        ));
        // A real key plus a point of order 8: on the curve, not small order,
        // but not in the prime-order subgroup.
        let (signer, _) = SigningKey::generate().expect("key");
        let real = CompressedEdwardsY(*signer.public_key().as_bytes())
            .decompress()
            .expect("a real key decodes");
        let torsioned = (real + curve25519_dalek::constants::EIGHT_TORSION[1]).compress();
        assert!(PublicKey::from_bytes(real.compress().0).is_ok());
        assert!(matches!(
            PublicKey::from_bytes(torsioned.0),
            Err(KeyError::RejectedPublicKey {
                reason: "the point has a small-order (torsion) component",
                ..
            })
        ));
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(PublicKey::from_bytes(off_curve).is_err());
    }
}
