//! What goes to stdout and stderr: results honouring the global `--json`
//! and `--quiet` flags, and errors as one deduplicated message or a JSON
//! envelope `{"error": {"class", "message", "path"}}`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Value};

use reliquary_appliance::audit::AuditError;
use reliquary_appliance::exit::ExitClass;
use reliquary_appliance::ops::SourceError;
use reliquary_appliance::report::ReportError;
use reliquary_appliance::sys::SysError;
use reliquary_appliance::verify::ExtractError;
use reliquary_image::keys::KeyError;
use reliquary_image::trust::TrustError;
use reliquary_image::ImageError;

/// The global output flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Output {
    /// Print results and errors as JSON on stdout.
    pub json: bool,
    /// Print no progress and no informational messages on stderr.
    pub quiet: bool,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Records the global flags once, before any command runs.
pub fn set(output: Output) {
    let _ = OUTPUT.set(output);
    super::progress::set_quiet(output.quiet);
}

/// The global flags (the defaults before [`set`]).
pub fn get() -> Output {
    OUTPUT.get().copied().unwrap_or_default()
}

/// Prints a command's result on stdout: `value` as pretty JSON under
/// `--json`, otherwise whatever `human` prints.
pub fn print_result(value: &Value, human: impl FnOnce()) -> anyhow::Result<()> {
    if get().json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human();
    }
    Ok(())
}

/// Prints an informational line on stderr, unless `--quiet`.
pub fn info(message: impl std::fmt::Display) {
    if !get().quiet {
        eprintln!("{message}");
    }
}

/// Prints a warning on stderr. Warnings are shown even under `--quiet`:
/// they tell of something the operator must know.
pub fn warn(message: impl std::fmt::Display) {
    eprintln!("warning: {message}");
}

/// A failed file operation of the CLI itself, naming its path.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct FileError {
    /// E.g. "cannot open", "cannot write".
    pub action: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl FileError {
    pub fn new(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An image file whose framing is broken.
#[derive(Debug, thiserror::Error)]
#[error("{} is not a valid image", path.display())]
pub struct NotAnImage {
    pub path: PathBuf,
    #[source]
    pub source: reliquary_image::ImageError,
}

/// The machine-readable name of an exit class.
pub fn class_name(class: ExitClass) -> &'static str {
    match class {
        ExitClass::Runtime => "runtime",
        ExitClass::Usage => "usage",
        ExitClass::Integrity => "integrity",
        ExitClass::Refused => "refused",
        ExitClass::Interrupted => "interrupted",
    }
}

/// The error message with each cause once: a cause whose text its parent
/// already quotes is left out, so an I/O error is never printed twice.
pub fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// The JSON envelope of an error.
pub fn error_json(err: &anyhow::Error, class: ExitClass) -> Value {
    json!({"error": {
        "class": class_name(class),
        "message": message(err),
        "path": path(err),
    }})
}

/// The JSON envelope of a command line that did not parse.
pub fn usage_json(message: &str) -> Value {
    json!({"error": {"class": class_name(ExitClass::Usage), "message": message, "path": null}})
}

/// Prints an error as the flags ask: the envelope on stdout under `--json`,
/// otherwise `error: message` on stderr.
pub fn print_error(err: &anyhow::Error, class: ExitClass, json: bool) {
    if json {
        println!("{}", error_json(err, class));
    } else {
        eprintln!("error: {}", message(err));
    }
}

/// The file or device an error is about, from the first typed error in its
/// chain that names one.
pub fn path(err: &anyhow::Error) -> Option<String> {
    let found = err
        .downcast_ref::<FileError>()
        .map(|e| e.path.clone())
        .or_else(|| err.downcast_ref::<NotAnImage>().map(|e| e.path.clone()))
        .or_else(|| match err.downcast_ref::<SourceError>() {
            Some(SourceError::Open { path, .. } | SourceError::Read { path, .. }) => {
                Some(path.clone())
            }
            _ => None,
        })
        .or_else(|| err.downcast_ref::<AuditError>().and_then(audit_path))
        .or_else(|| match err.downcast_ref::<ReportError>() {
            Some(
                ReportError::NoRecord { path, .. }
                | ReportError::NotARestore { path, .. }
                | ReportError::Unverified { path, .. }
                | ReportError::Frame { path, .. },
            ) => Some(path.clone()),
            _ => None,
        })
        .or_else(|| err.downcast_ref::<KeyError>().and_then(key_path))
        .or_else(|| err.downcast_ref::<TrustError>().and_then(trust_path))
        .or_else(|| err.downcast_ref::<SysError>().and_then(sys_path))
        .or_else(|| match err.downcast_ref::<ImageError>() {
            Some(ImageError::Open { path, .. }) => Some(path.clone()),
            _ => None,
        })
        .or_else(|| match err.downcast_ref::<ExtractError>() {
            Some(ExtractError::Create { path, .. } | ExtractError::Write { path, .. }) => {
                Some(path.clone())
            }
            _ => None,
        });
    found.map(|p| p.display().to_string())
}

fn audit_path(e: &AuditError) -> Option<PathBuf> {
    use AuditError::*;
    match e {
        AlreadyExists { path }
        | Create { path, .. }
        | Open { path, .. }
        | Locked { path }
        | Read { path, .. }
        | Header { path, .. }
        | Damaged { path, .. }
        | Quarantine { path, .. }
        | Truncate { path, .. }
        | AppendWrite { path, .. }
        | AppendSync { path, .. }
        | Degraded { path, .. }
        | NoSpace { path, .. }
        | Statvfs { path, .. }
        | WriteCheckpoint { path, .. }
        | ReadCheckpoint { path, .. }
        | BadCheckpoint { path, .. }
        | Verification { path, .. } => Some(path.clone()),
        KeyMismatch { key, .. } => Some(key.clone()),
        Key(k) => key_path(k),
        _ => None,
    }
}

fn key_path(e: &KeyError) -> Option<PathBuf> {
    match e {
        KeyError::Read { path, .. }
        | KeyError::Write { path, .. }
        | KeyError::BadPrivateKey { path, .. }
        | KeyError::BadPublicKey { path, .. }
        | KeyError::Exists(path)
        | KeyError::TooLarge(path) => Some(path.clone()),
        _ => None,
    }
}

fn trust_path(e: &TrustError) -> Option<PathBuf> {
    match e {
        TrustError::Read { path, .. }
        | TrustError::TooManyKeys { path }
        | TrustError::Policy { path, .. }
        | TrustError::Empty(path)
        | TrustError::FileTooLarge(path) => Some(path.clone()),
        TrustError::Key(k) => key_path(k),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn sys_path(e: &SysError) -> Option<PathBuf> {
    match e {
        SysError::Open { path, .. }
        | SysError::Busy { path }
        | SysError::UnsupportedTarget { path } => Some(path.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_quoted_by_its_context_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(2);
        let err = anyhow::Error::new(FileError::new("cannot open", Path::new("/x/y"), io));
        let text = message(&err);
        assert_eq!(
            text,
            "cannot open /x/y: No such file or directory (os error 2)"
        );
        assert_eq!(path(&err).as_deref(), Some("/x/y"));
    }

    #[test]
    fn the_envelope_names_class_message_and_path() {
        let err = anyhow::Error::new(AuditError::Locked {
            path: PathBuf::from("/a/audit.log"),
        });
        let v = error_json(&err, ExitClass::Refused);
        assert_eq!(v["error"]["class"], "refused");
        assert_eq!(v["error"]["path"], "/a/audit.log");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("in use")));
    }
}
