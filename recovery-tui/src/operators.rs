//! The optional `operators` list in the trust store: who may sign in.
//!
//! ```text
//! # comments and blank lines are ignored
//! op7   Alice Jones
//! svc12 Bob Smith
//! ```
//! When the file exists, ids not in it are refused at sign-in.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The file's name inside the trust-store directory.
pub use reliquary_image::trust::OPERATORS_FILE;
/// Bounds that keep a hostile file from exhausting memory.
const MAX_FILE_LEN: u64 = 256 << 10;
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum OperatorsError {
    #[error("cannot read the operators list {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the operators list {path} is larger than {MAX_FILE_LEN} bytes; it is refused rather than read in part")]
    TooLarge { path: PathBuf },
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
    /// Loads `TRUST_DIR/operators`; `Ok(None)` when the file does not exist.
    pub fn load(trust_dir: &Path) -> Result<Option<Self>, OperatorsError> {
        let path = trust_dir.join(OPERATORS_FILE);
        let read_err = |source| OperatorsError::Read {
            path: path.clone(),
            source,
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let mut text = String::new();
        // One byte over the limit tells a long file from one that fits: a
        // cut list would silently drop the operators at its end.
        file.take(MAX_FILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_FILE_LEN {
            return Err(OperatorsError::TooLarge { path });
        }
        Self::parse(&text, &path).map(Some)
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
    fn a_list_over_the_limit_is_refused_not_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = "op7 Alice Jones\n";
        let body = line.repeat(MAX_FILE_LEN as usize / line.len() + 1);
        std::fs::write(dir.path().join(OPERATORS_FILE), body).expect("write");
        assert!(matches!(
            OperatorList::load(dir.path()),
            Err(OperatorsError::TooLarge { .. })
        ));
        std::fs::remove_file(dir.path().join(OPERATORS_FILE)).expect("remove");
        assert!(matches!(OperatorList::load(dir.path()), Ok(None)));
    }

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
        let dir = std::env::temp_dir().join(format!("reliquary-ops-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        assert_eq!(OperatorList::load(&dir).expect("loads"), None);
        std::fs::write(dir.join(OPERATORS_FILE), "op7 Alice Jones\n").expect("write");
        let list = OperatorList::load(&dir).expect("loads").expect("present");
        assert_eq!(list.entries.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
