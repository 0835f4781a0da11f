//! Checkpoints: the log's size and RFC 6962 Merkle root in the C2SP
//! `tlog-checkpoint` text format, signed as a C2SP `signed-note` with the
//! appliance's Ed25519 key.
//!
//! ```text
//! reliquary-audit/<appliance-id>          origin
//! 12                                      tree size (records)
//! <base64 of the 32-byte root>
//!                                         blank line
//! — reliquary-audit/<appliance-id> <base64(key hash[4] || signature[64])>
//! ```

use std::io::Read;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use reliquary_image::keys::{PublicKey, SigningKey};

use super::layout::sha256;
use super::{AuditError, Digest};

/// Upper bound on a checkpoint file we are willing to read.
const MAX_NOTE_LEN: u64 = 16 * 1024;
/// The C2SP signed-note signature type byte for Ed25519.
const ED25519_TYPE: u8 = 0x01;

/// A log's size and root, with the origin that names the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Digest,
}

/// Why a checkpoint note was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the note is larger than {MAX_NOTE_LEN} bytes")]
    TooLarge,
    #[error("the note is not UTF-8 text without control characters (a tab, a form feed or another control character is in it)")]
    NotText,
    #[error("line {0} holds a carriage return that does not end the line; only LF or CRLF line ends are read")]
    StrayCarriageReturn(usize),
    #[error("the note has no signature line: one must start with an em dash and a space (`\u{2014} `); a hyphen in its place, or a dash lost in copying, does not count")]
    NoSignatures,
    #[error("signature line {0} is malformed: each signature is `\u{2014} NAME BASE64` on one line; a signature broken over two lines (as a narrow column or a copy may do) or joined to another line does not verify")]
    SignatureLine(usize),
    #[error("the note carries no signature by {name} with key hash {key_hash}")]
    NotSignedByKey { name: String, key_hash: String },
    #[error(
        "the signature by {name} does not verify: the note was altered or signed by another key"
    )]
    BadSignature { name: String },
    #[error("the checkpoint body is malformed: {0}")]
    Body(&'static str),
}

impl CheckpointError {
    /// Whether the note is malformed (a usage problem: fix the copy) rather
    /// than well formed but not signed by the key (an integrity failure).
    pub fn is_malformed(&self) -> bool {
        !matches!(
            self,
            CheckpointError::NotSignedByKey { .. } | CheckpointError::BadSignature { .. }
        )
    }
}

impl Checkpoint {
    /// The origin line of the log of appliance `appliance_id`. It is also
    /// the signed-note key name.
    pub fn origin_for(appliance_id: &str) -> String {
        format!("reliquary-audit/{appliance_id}")
    }

    /// The note text: origin, size and root, each ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root.0)
        )
    }

    /// The complete signed note.
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = self.body();
        let mut blob = key_hash(&self.origin, key.public_key().as_bytes()).to_vec();
        blob.extend_from_slice(&key.sign(body.as_bytes()));
        format!("{body}\n\u{2014} {} {}\n", self.origin, B64.encode(blob))
    }

    /// What a technician copies onto the work order.
    pub fn short_form(&self) -> String {
        format!("size {} root {}", self.size, &self.root.to_hex()[..8])
    }

    /// Parses a signed note and checks the signature whose key name is the
    /// checkpoint's origin. Other signatures (e.g. cosignatures) are ignored.
    pub fn parse_verified(note: &str, key: &PublicKey) -> Result<Self, CheckpointError> {
        let text = open_note(note)?;
        let cp = Self::parse_body(&text.body)?;
        let want = key_hash(&cp.origin, key.as_bytes());
        let sig = text
            .signatures
            .iter()
            .find(|(name, blob)| *name == cp.origin && blob.len() >= 4 && blob[..4] == want)
            .ok_or_else(|| CheckpointError::NotSignedByKey {
                name: cp.origin.clone(),
                key_hash: hex::encode(want),
            })?;
        if sig.1.len() != 68 || !key.verify(text.body.as_bytes(), &sig.1[4..]) {
            return Err(CheckpointError::BadSignature {
                name: cp.origin.clone(),
            });
        }
        Ok(cp)
    }

    /// Reads a checkpoint file (size-capped) and verifies it with `key`.
    pub fn read_verified(path: &Path, key: &PublicKey) -> Result<Self, AuditError> {
        let read_err = |source| AuditError::ReadCheckpoint {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        reliquary_image::regular_file::open(path)
            .map_err(read_err)?
            .take(MAX_NOTE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        let bad = |source| AuditError::BadCheckpoint {
            path: path.to_path_buf(),
            source,
        };
        if bytes.len() as u64 > MAX_NOTE_LEN {
            return Err(bad(CheckpointError::TooLarge));
        }
        let text = String::from_utf8(bytes).map_err(|_| bad(CheckpointError::NotText))?;
        Self::parse_verified(&text, key).map_err(bad)
    }

    fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let mut lines = body.split_terminator('\n');
        let origin = lines.next().filter(|o| !o.is_empty());
        let origin = origin.ok_or(CheckpointError::Body("the origin line is empty"))?;
        let size = lines
            .next()
            .ok_or(CheckpointError::Body("the size line is missing"))?;
        let canonical = size == "0" || (!size.starts_with('0') && !size.is_empty());
        let size = size
            .parse::<u64>()
            .ok()
            .filter(|_| canonical && size.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(CheckpointError::Body("the size is not a decimal number"))?;
        let root = lines
            .next()
            .ok_or(CheckpointError::Body("the root line is missing"))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or(CheckpointError::Body("the root is not base64 of 32 bytes"))?;
        if lines.any(str::is_empty) {
            return Err(CheckpointError::Body("an extension line is empty"));
        }
        Ok(Self {
            origin: origin.to_string(),
            size,
            root: Digest(root),
        })
    }
}

/// The C2SP signed-note key hash: the first 4 bytes of
/// SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key).
pub fn key_hash(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let d = sha256(&[name.as_bytes(), b"\n", &[ED25519_TYPE], public_key]);
    [d.0[0], d.0[1], d.0[2], d.0[3]]
}

/// The verifier key string other C2SP tools accept:
/// `<name>+<key hash hex>+<base64(0x01 || public key)>`.
pub fn verifier_key(name: &str, public_key: &[u8; 32]) -> String {
    let mut material = vec![ED25519_TYPE];
    material.extend_from_slice(public_key);
    format!(
        "{name}+{}+{}",
        hex::encode(key_hash(name, public_key)),
        B64.encode(material)
    )
}

/// The RFC 6962 Merkle tree hash over leaf hashes (each already
/// SHA-256(0x00 || leaf)). The empty tree hashes to SHA-256 of nothing.
pub fn merkle_root(leaves: &[Digest]) -> Digest {
    match leaves.len() {
        0 => sha256(&[]),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            let (l, r) = leaves.split_at(k);
            node_hash(&merkle_root(l), &merkle_root(r))
        }
    }
}

/// The RFC 6962 root of a growing log in O(log n) per leaf: the roots of
/// its perfect subtrees ("peaks"), largest first.
#[derive(Debug, Clone, Default)]
pub struct MerkleAccumulator {
    peaks: Vec<(u32, Digest)>,
    size: u64,
}

impl MerkleAccumulator {
    pub fn push(&mut self, leaf: Digest) {
        let (mut height, mut node) = (0, leaf);
        while let Some(&(h, left)) = self.peaks.last() {
            if h != height {
                break;
            }
            self.peaks.pop();
            node = node_hash(&left, &node);
            height += 1;
        }
        self.peaks.push((height, node));
        self.size += 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Equal to [`merkle_root`] over every leaf pushed: RFC 6962 splits at
    /// the largest power of two, so the root folds the peaks from the right.
    pub fn root(&self) -> Digest {
        let mut peaks = self.peaks.iter().rev().map(|(_, d)| *d);
        match peaks.next() {
            None => sha256(&[]),
            Some(last) => peaks.fold(last, |acc, left| node_hash(&left, &acc)),
        }
    }
}

fn node_hash(left: &Digest, right: &Digest) -> Digest {
    sha256(&[&[1u8], &left.0, &right.0])
}

struct OpenedNote<'a> {
    /// The text, each line ending in a newline, as it was signed.
    body: String,
    signatures: Vec<(&'a str, Vec<u8>)>,
}

/// Splits a signed note into its text and decoded signature lines. It
/// reads what paper, scanners and editors make of a note: CRLF line ends,
/// a missing or extra final newline, blank lines before or after it,
/// spaces at the ends of lines, and a lost blank line between text and
/// signatures. None of that is signed, and the signature is checked over
/// the text rebuilt exactly as it was signed, so nothing else is accepted.
fn open_note(note: &str) -> Result<OpenedNote<'_>, CheckpointError> {
    if note.len() as u64 > MAX_NOTE_LEN {
        return Err(CheckpointError::TooLarge);
    }
    let mut lines = Vec::new();
    for (i, line) in note.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.contains('\r') {
            return Err(CheckpointError::StrayCarriageReturn(i + 1));
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(CheckpointError::NotText);
        }
        let line = line.trim_end_matches([' ', '\t']);
        if line.contains('\t') {
            return Err(CheckpointError::NotText);
        }
        lines.push(line);
    }
    let first = lines
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(lines.len());
    let last = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(first, |i| i + 1);
    let lines = &lines[first..last];
    let split = lines
        .iter()
        .position(|l| l.starts_with("\u{2014} "))
        .ok_or(CheckpointError::NoSignatures)?;
    let mut text = &lines[..split];
    while let Some((last, rest)) = text.split_last() {
        if !last.is_empty() {
            break;
        }
        text = rest;
    }
    let body: String = text.iter().map(|l| format!("{l}\n")).collect();
    let mut signatures = Vec::new();
    for (i, line) in lines[split..].iter().enumerate() {
        let bad = || CheckpointError::SignatureLine(i + 1);
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(bad)?;
        let (name, blob) = rest.split_once(' ').ok_or_else(bad)?;
        if name.is_empty() || name.contains('+') || blob.contains(' ') {
            return Err(bad());
        }
        let blob = B64.decode(blob).map_err(|_| bad())?;
        if blob.len() < 5 {
            return Err(bad());
        }
        signatures.push((name, blob));
    }
    Ok(OpenedNote { body, signatures })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u8) -> Digest {
        sha256(&[&[0u8], &[i]])
    }

    #[test]
    fn merkle_root_matches_the_rfc_6962_definition_for_small_trees() {
        let l: Vec<Digest> = (0..3).map(leaf).collect();
        let node = |a: Digest, b: Digest| sha256(&[&[1u8], &a.0, &b.0]);
        assert_eq!(merkle_root(&l[..1]), l[0]);
        assert_eq!(merkle_root(&l[..2]), node(l[0], l[1]));
        // n = 3 splits at k = 2, not in the middle.
        assert_eq!(merkle_root(&l), node(node(l[0], l[1]), l[2]));
        assert_eq!(
            merkle_root(&[]).to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_accumulator_agrees_with_the_recursive_definition() {
        let leaves: Vec<Digest> = (0..70).map(leaf).collect();
        let mut acc = MerkleAccumulator::default();
        assert_eq!(acc.root(), merkle_root(&[]));
        for n in 1..=leaves.len() {
            acc.push(leaves[n - 1]);
            assert_eq!(acc.root(), merkle_root(&leaves[..n]), "n = {n}");
        }
        assert_eq!(acc.size(), 70);
    }

    #[test]
    fn a_note_verifies_as_paper_scanners_and_editors_return_it() {
        let (key, _) = SigningKey::generate().expect("key");
        let cp = Checkpoint {
            origin: Checkpoint::origin_for("line-3"),
            size: 41,
            root: leaf(2),
        };
        let note = cp.sign(&key);
        let copies = [
            ("LF", note.clone()),
            ("no final newline", note.trim_end().to_string()),
            ("CRLF", note.replace('\n', "\r\n")),
            (
                "CRLF without a final one",
                note.trim_end().replace('\n', "\r\n"),
            ),
            ("an extra blank line", format!("{note}\n")),
            ("blank lines around it", format!("\n\n{note}\n\n")),
            ("spaces at line ends", note.replace('\n', "  \n")),
            (
                "no blank line before the signature",
                note.replacen("\n\n", "\n", 1),
            ),
        ];
        for (what, copy) in copies {
            assert_eq!(
                Checkpoint::parse_verified(&copy, &key.public_key()).as_ref(),
                Ok(&cp),
                "{what}"
            );
        }
        let malformed = [
            ("a wrapped signature", {
                let (head, tail) = note.trim_end().split_at(note.trim_end().len() - 20);
                format!("{head}\n{tail}\n")
            }),
            ("a hyphen for the dash", note.replace('\u{2014}', "-")),
            ("a stray carriage return", note.replacen('\n', "\r", 1)),
            ("a tab", note.replacen("line-3", "line\t-3", 1)),
        ];
        for (what, copy) in malformed {
            let err = Checkpoint::parse_verified(&copy, &key.public_key()).unwrap_err();
            assert!(err.is_malformed(), "{what}: {err}");
        }
        let forged = note.replacen("\n41\n", "\n42\n", 1);
        let err = Checkpoint::parse_verified(&forged, &key.public_key()).unwrap_err();
        assert!(!err.is_malformed(), "{err}");
    }

    #[test]
    fn a_checkpoint_round_trips_and_rejects_an_edit() {
        let (key, _) = SigningKey::generate().expect("key");
        let cp = Checkpoint {
            origin: Checkpoint::origin_for("line-3"),
            size: 7,
            root: leaf(9),
        };
        let note = cp.sign(&key);
        assert_eq!(Checkpoint::parse_verified(&note, &key.public_key()), Ok(cp));
        let edited = note.replacen("\n7\n", "\n8\n", 1);
        assert!(matches!(
            Checkpoint::parse_verified(&edited, &key.public_key()),
            Err(CheckpointError::BadSignature { .. })
        ));
    }
}
