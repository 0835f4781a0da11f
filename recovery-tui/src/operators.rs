//! The optional `operators` list in the trust store: who may sign in.
//!
//! ```text
//! # comments and blank lines are ignored
//! op7   Alice Jones
//! svc12 Bob Smith
//! ```
//! When the file exists, ids not in it are refused at sign-in.

use std::path::{Path, PathBuf};

use reliquary_image::TrustStore;

/// The file's name inside the trust-store directory.
pub use reliquary_image::trust::OPERATORS_FILE;
/// The longest operator id.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum OperatorsError {
    #[error("{path}:{line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// A known operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorEntry {
    pub id: String,
    pub name: String,
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

    /// Parses lines of `ID Full Name`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, OperatorsError> {
        let mut entries: Vec<OperatorEntry> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let bad = |reason: String| OperatorsError::Line {
                path: path.to_path_buf(),
                line: n + 1,
                reason,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (id, name) = line
                .split_once(char::is_whitespace)
                .map(|(id, name)| (id, name.trim()))
                .ok_or_else(|| bad(format!("`{line}` needs a name after the id")))?;
            if !is_valid_id(id) {
                return Err(bad(format!(
                    "`{id}` is not an operator id: use 1 to {MAX_ID_LEN} letters, digits, `.`, `_`, `-` or `@`"
                )));
            }
            if entries.iter().any(|e| e.id == id) {
                return Err(bad(format!("operator `{id}` is listed twice")));
            }
            entries.push(OperatorEntry {
                id: id.to_string(),
                name: name.to_string(),
            });
        }
        Ok(Self { entries })
    }

    pub fn find(&self, id: &str) -> Option<&OperatorEntry> {
        self.entries.iter().find(|e| e.id == id)
    }
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

    #[test]
    fn parses_ids_and_names_skipping_comments() {
        let list = OperatorList::parse(
            "# staff\nop7  Alice Jones\n\nsvc-12 Bob Smith # night shift\n",
            Path::new("operators"),
        )
        .expect("parses");
        assert_eq!(list.entries.len(), 2);
        assert_eq!(
            list.find("op7").map(|e| e.name.as_str()),
            Some("Alice Jones")
        );
        assert_eq!(
            list.find("svc-12").map(|e| e.name.as_str()),
            Some("Bob Smith")
        );
        assert!(list.find("op8").is_none());
    }

    #[test]
    fn refuses_lines_without_a_name_bad_ids_and_duplicates() {
        let err = |text: &str| {
            OperatorList::parse(text, Path::new("operators"))
                .expect_err("refused")
                .to_string()
        };
        assert!(err("op7\n").contains("operators:1: `op7` needs a name"));
        assert!(err("op/7 Alice\n").contains("not an operator id"));
        assert!(err("op7 Alice\nop7 Bob\n").contains("operators:2: operator `op7` is listed twice"));
    }

    #[test]
    fn a_missing_file_means_no_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        reliquary_image::keys::SigningKey::generate_to_files(&dir.path().join("eng"), Some("Eng"))
            .expect("key");
        let trust = TrustStore::load(dir.path()).expect("trust store");
        assert_eq!(
            OperatorList::from_trust(&trust, dir.path()).expect("parses"),
            None
        );
        std::fs::write(dir.path().join(OPERATORS_FILE), "op7 Alice Jones\n").expect("write");
        let trust = TrustStore::load(dir.path()).expect("trust store");
        let list = OperatorList::from_trust(&trust, dir.path())
            .expect("parses")
            .expect("present");
        assert_eq!(list.entries.len(), 1);
    }
}
