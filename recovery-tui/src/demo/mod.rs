//! `recovery-tui --demo`: a throwaway vault, trust store, audit log and
//! file target, so the whole flow can be tried without a disk or a key.
//!
//! The demo key is generated at run time inside the demo directory and only
//! that directory's trust store holds it; nothing is compiled in and nothing
//! outside the demo trusts it.

pub mod disk;

use std::path::{Path, PathBuf};

use reliquary_appliance::audit::{AuditError, AuditLog, Digest, Environment};
use reliquary_appliance::capture::{capture, CaptureError, CaptureOptions};
use reliquary_image::keys::{public_key_path, KeyError, SigningKey};
use reliquary_image::{Meaning, SignerStatement, TrustError, TrustStore};

use crate::engine::SessionConfig;
use crate::operators::{OperatorList, OperatorsError, Role, DEFAULT_MIN_PIN_LEN, OPERATORS_FILE};

/// The demo disk's default size: a few hundred MiB sets up in seconds.
pub const DEFAULT_SIZE_MIB: u64 = 256;
/// Share of the data partition filled with file content.
const FILL_PERCENT: u64 = 35;
/// The operators the demo's trust store lists: id, name and PIN. The demo
/// shows them on its sign-in screen; a real stick never has a PIN in clear.
pub const DEMO_OPERATORS: [(&str, &str, Role, &str); 2] = [
    ("tech1", "Demo Technician", Role::Technician, "111111"),
    ("qa2", "Demo Reviewer", Role::Supervisor, "222222"),
];

/// The demo's operator ids and PINs, for its sign-in screen.
pub fn demo_pins() -> Vec<(String, String)> {
    DEMO_OPERATORS
        .iter()
        .map(|(id, _, _, pin)| (id.to_string(), pin.to_string()))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo directory {0} is not empty; give an empty or new directory")]
    NotEmpty(PathBuf),
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error("cannot make the demo signing key: {0}")]
    Key(#[from] KeyError),
    #[error("cannot capture the demo disk: {0}")]
    Capture(#[from] CaptureError),
    #[error("cannot load the demo trust store: {0}")]
    Trust(#[from] TrustError),
    #[error("cannot list the demo operators: {0}")]
    Operators(#[from] OperatorsError),
    #[error("cannot create the demo audit log: {0}")]
    Audit(#[from] AuditError),
}

/// The demo's directories and files.
#[derive(Debug, Clone)]
pub struct DemoPaths {
    pub root: PathBuf,
    pub vault: PathBuf,
    pub trust: PathBuf,
    pub audit: PathBuf,
    pub keys: PathBuf,
    pub source_disk: PathBuf,
    pub image: PathBuf,
    pub target: PathBuf,
}

impl DemoPaths {
    pub fn under(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            vault: root.join("vault"),
            trust: root.join("trust"),
            audit: root.join("audit"),
            keys: root.join("keys"),
            source_disk: root.join("source-disk.raw"),
            image: root.join("vault").join("win7-cnc-demo.rimg"),
            target: root.join("target.raw"),
        }
    }

    /// The session the demo runs: its vault, trust store and audit log,
    /// with the file target offered.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            vault: self.vault.clone(),
            trust: self.trust.clone(),
            audit: self.audit.clone(),
            include_loop: false,
            target_files: vec![self.target.clone()],
        }
    }
}

/// Builds the demo under `root` (which must be empty or absent).
pub fn prepare(root: &Path, size_mib: u64) -> Result<DemoPaths, DemoError> {
    let paths = DemoPaths::under(root);
    let create = |path: &Path| {
        std::fs::create_dir_all(path).map_err(|source| DemoError::Create {
            path: path.to_path_buf(),
            source,
        })
    };
    create(root)?;
    let not_empty = std::fs::read_dir(root)
        .map_err(|source| DemoError::Create {
            path: root.to_path_buf(),
            source,
        })?
        .next()
        .is_some();
    if not_empty {
        return Err(DemoError::NotEmpty(root.to_path_buf()));
    }
    for dir in [&paths.vault, &paths.trust, &paths.keys] {
        create(dir)?;
    }
    disk::generate(&paths.source_disk, size_mib, FILL_PERCENT)?;

    let key_path = paths.keys.join("demo-signing.key");
    let key = SigningKey::generate_to_files(&key_path, Some("Reliquary demo key (throwaway)"))?;
    let trusted_pub = paths.trust.join("demo.pub");
    std::fs::copy(public_key_path(&key_path), &trusted_pub).map_err(|source| {
        DemoError::Create {
            path: trusted_pub.clone(),
            source,
        }
    })?;
    let mut operators = OperatorList::default();
    for (id, name, role, pin) in DEMO_OPERATORS {
        operators.add(id, name, role, pin, DEFAULT_MIN_PIN_LEN)?;
    }
    let operators_file = paths.trust.join(OPERATORS_FILE);
    std::fs::write(&operators_file, operators.to_text()).map_err(|source| DemoError::Create {
        path: operators_file,
        source,
    })?;

    let source = std::fs::File::open(&paths.source_disk).map_err(|source| DemoError::Create {
        path: paths.source_disk.clone(),
        source,
    })?;
    let size = size_mib << 20;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let opts = CaptureOptions {
        name: "Win7 Pro CNC controller".into(),
        description: "Demo image: generated MBR disk with System Reserved and Windows partitions"
            .into(),
        version: "2026.03-demo".into(),
        compatible: vec!["DEMO-CNC-5000".into()],
        statement: SignerStatement {
            signer_name: "Demo Engineer (throwaway key)".into(),
            meaning: Meaning::Authored,
            signed_unix: now,
        },
        chunk_size: 4 << 20,
        level: 3,
        zero_grain: 4096,
        logical_sector_size: 512,
        physical_sector_size: 4096,
        model: Some("DEMO-SSD 256".into()),
        serial: Some("DEMO0001".into()),
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        created_unix: now,
        all_sectors: false,
    };
    capture(&source, size, &paths.image, &key, &opts, &|_, _| {})?;

    let trust = TrustStore::load(&paths.trust)?;
    AuditLog::init(
        &paths.audit,
        Some("demo-appliance"),
        Environment::system(Some(Digest(trust.digest()))),
    )?;
    Ok(paths)
}
