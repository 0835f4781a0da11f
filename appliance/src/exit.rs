//! The process exit codes shared by every `reliquary` command.
//!
//! Library errors say which class they belong to; `main` maps the class to
//! the code in one place.

/// What kind of failure ended a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// 1: a runtime or I/O error.
    Runtime,
    /// 2: the command line was wrong.
    Usage,
    /// 3: an integrity or authenticity check failed.
    Integrity,
    /// 4: refused for safety.
    Refused,
    /// 130: stopped by the operator (Ctrl-C, SIGTERM), as shells report it.
    Interrupted,
}

impl ExitClass {
    pub fn code(self) -> u8 {
        match self {
            ExitClass::Runtime => 1,
            ExitClass::Usage => 2,
            ExitClass::Integrity => 3,
            ExitClass::Refused => 4,
            ExitClass::Interrupted => 130,
        }
    }
}
