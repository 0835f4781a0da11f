//! Verify and record: every chunk of an image whose signatures met the
//! trust policy is decoded and checked, and the result, pass or fail, is
//! recorded as `ImageVerified` when a log is given.

use std::fs::File;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reliquary_image::{Image, ImageError};

use crate::audit::{lock_shared, AuditError, AuditLog, CheckResult, Operator, Payload};
use crate::restore::records::image_ref;
use crate::verify::verify_chunks;

/// Where an operation records itself: the log (shared, so a front end may
/// keep it open for others) and who runs the operation.
#[derive(Debug, Clone, Copy)]
pub struct Recording<'a> {
    pub log: &'a Mutex<AuditLog>,
    pub operator: &'a Operator,
}

/// What a verification found and how it was recorded.
#[derive(Debug)]
pub struct Verification {
    /// The first damaged chunk (lowest sector), if any.
    pub result: Result<(), ImageError>,
    pub took: Duration,
    /// The `ImageVerified` record's number, or why it could not be
    /// written; `None` without a log.
    pub record: Option<Result<u64, AuditError>>,
}

/// Checks every chunk of `image` (`progress` gets stored bytes checked),
/// then records the result. The log is locked only to append.
pub fn verify_and_record(
    image: &Image<File>,
    recording: Option<Recording<'_>>,
    progress: &(dyn Fn(u64) + Sync),
) -> Verification {
    let started = Instant::now();
    let result = verify_chunks(image, progress);
    let took = started.elapsed();
    let record = recording.map(|recording| {
        lock_shared(recording.log)
            .append(
                recording.operator,
                Payload::ImageVerified {
                    image: image_ref(image),
                    result: match &result {
                        Ok(()) => CheckResult::Passed,
                        Err(e) => CheckResult::Failed {
                            reason: e.to_string(),
                        },
                    },
                },
            )
            .map(|appended| appended.seq)
    });
    Verification {
        result,
        took,
        record,
    }
}
