//! `keygen`, `capture`, `sign`, `inspect`, `verify` and `extract`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use reliquary_appliance::audit::lock_shared;
use reliquary_appliance::capture::{capture, CaptureOptions};
use reliquary_appliance::ops::{self, Recording};
use reliquary_appliance::verify::extract;
use reliquary_image::keys::SigningKey;
use reliquary_image::layout::DEFAULT_CHUNK_SIZE;
use reliquary_image::{
    CaptureMode, ExtentKind, Image, Meaning, PartitionScheme, SignerStatement, Trust, TrustStore,
};

use super::inputs::open_image;
use super::output::{self, print_result};
use super::progress::{human_bytes, Meter};
use super::restore::AuditArgs;
use super::UsageError;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  reliquary keygen --out keys/alice.key --name \"Alice Engineer\""
)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8, mode 0600); the public key goes to FILE.pub.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The signer's name, recorded in the .pub file.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  reliquary capture /dev/sdb -o win7-line3.rimg --key keys/alice.key \\\n    --name win7-line3 --image-version 2026.03 --compatible \"Siemens IPC547\""
)]
pub struct CaptureArgs {
    /// A raw disk image file, an ISO, or a block device (opened read-only).
    source: PathBuf,
    /// The image to write (must not exist).
    #[arg(short, long, value_name = "IMAGE.rimg")]
    output: PathBuf,
    /// The signing key (PKCS#8).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The image's name.
    #[arg(long)]
    name: String,
    /// Free text describing the image.
    #[arg(long, default_value = "")]
    description: String,
    /// The image's version, shown in the vault and recorded with each restore.
    #[arg(long = "image-version", value_name = "VERSION", default_value = "1")]
    image_version: String,
    /// A machine model the image is meant for (repeatable).
    #[arg(long = "compatible", value_name = "MODEL")]
    compatible: Vec<String>,
    /// What the capturing engineer declares by signing.
    #[arg(long, default_value = "authored")]
    meaning: Meaning,
    /// The signer's name (defaults to the name in KEY.pub).
    #[arg(long)]
    signer: Option<String>,
    /// Chunk size: a power of two from 64K to 64M.
    #[arg(long = "chunk-size", default_value_t = u64::from(DEFAULT_CHUNK_SIZE), value_parser = parse_size)]
    chunk_size: u64,
    /// zstd compression level (1 to 19).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Block size for zero detection: a power of two from 4K to 64K.
    #[arg(long = "zero-grain", default_value = "4K", value_parser = parse_size)]
    zero_grain: u64,
    /// Logical sector size of a file source (block devices report their
    /// own). A GPT decides it; a disk without one defaults to 512.
    #[arg(long = "sector-size", value_parser = parse_sector_size)]
    sector_size: Option<u32>,
    /// The source disk's model, if not a block device that reports it.
    #[arg(long)]
    model: Option<String>,
    /// The source disk's serial number.
    #[arg(long)]
    serial: Option<String>,
    /// Keep every sector, including the free space of NTFS, FAT and ext
    /// file systems (which is otherwise left out where the volume's
    /// allocation map passes its cross-checks).
    #[arg(long = "all-sectors")]
    all_sectors: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  reliquary sign win7-line3.rimg --key keys/qa.key --meaning approved"
)]
pub struct SignArgs {
    /// The image to add the signature to (changed in place).
    #[arg(value_name = "IMAGE.rimg")]
    image: PathBuf,
    /// The co-signer's private key (PKCS#8), as written by `reliquary keygen`.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// What this signature declares: authored, reviewed or approved.
    #[arg(long)]
    meaning: Meaning,
    /// The signer's name (defaults to the name in KEY.pub).
    #[arg(long)]
    signer: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  reliquary inspect win7-line3.rimg --json")]
pub struct InspectArgs {
    /// The image to describe.
    #[arg(value_name = "IMAGE.rimg")]
    image: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  reliquary verify win7-line3.rimg --trust /etc/reliquary/trust")]
pub struct VerifyArgs {
    /// The image to verify.
    #[arg(value_name = "IMAGE.rimg")]
    image: PathBuf,
    /// A .pub file or a trust-store directory.
    #[arg(long, value_name = "PATH")]
    trust: PathBuf,
    #[command(flatten)]
    audit: AuditArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  reliquary extract win7-line3.rimg -o disk.raw --trust /etc/reliquary/trust"
)]
pub struct ExtractArgs {
    /// The image to extract.
    #[arg(value_name = "IMAGE.rimg")]
    image: PathBuf,
    /// The raw disk file to write (must not exist).
    #[arg(short, long, value_name = "RAW")]
    output: PathBuf,
    /// A .pub file or a trust-store directory.
    #[arg(long, value_name = "PATH")]
    trust: PathBuf,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = SigningKey::generate_to_files(&args.out, args.name.as_deref())?;
    let key_id = key.public_key().key_id();
    let public = reliquary_image::keys::public_key_path(&args.out);
    print_result(
        &json!({"private_key": args.out, "public_key": public, "key_id": key_id}),
        || {
            println!(
                "wrote {} and {}\nkey id {key_id}",
                args.out.display(),
                public.display()
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn capture_cmd(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    let chunk_size = u32::try_from(args.chunk_size)
        .ok()
        .filter(|c| c.is_power_of_two() && (64 << 10..=64 << 20).contains(c))
        .ok_or_else(|| {
            UsageError(format!(
                "--chunk-size {} must be a power of two from 64K to 64M",
                args.chunk_size
            ))
        })?;
    let zero_grain = u32::try_from(args.zero_grain)
        .ok()
        .filter(|g| g.is_power_of_two() && (4096..=65536).contains(g))
        .ok_or_else(|| {
            UsageError(format!(
                "--zero-grain {} must be a power of two from 4K to 64K",
                args.zero_grain
            ))
        })?;
    let key = SigningKey::load(&args.key)?;
    let signer = signer_name(args.signer, &args.key)?;
    // The sysfs of the running system: its partitions are what is mounted.
    let probed = ops::probe_source(&args.source, args.sector_size, Path::new("/sys"))?;
    if let Some(warning) = &probed.warning {
        output::warn(warning);
    }
    let (source, size) = (&probed.file, probed.size_bytes);
    let (logical, physical) = (probed.logical_sector_size, probed.physical_sector_size);
    let opts = CaptureOptions {
        name: args.name,
        description: args.description,
        version: args.image_version,
        compatible: args.compatible,
        statement: SignerStatement {
            signer_name: signer,
            meaning: args.meaning,
            signed_unix: now_unix(),
        },
        chunk_size,
        level: args.level,
        zero_grain,
        logical_sector_size: logical,
        physical_sector_size: physical,
        model: args.model,
        serial: args.serial,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        created_unix: now_unix(),
        all_sectors: args.all_sectors,
    };
    let started = Instant::now();
    let meter = Meter::terminal_only("capture", size);
    let report = capture(source, size, &args.output, &key, &opts, &|done, _| {
        meter.set(done)
    })?;
    meter.finish();
    let m = &report.manifest;
    let seconds = started.elapsed().as_secs_f64();
    let summary = json!({
        "image": args.output,
        "source": args.source,
        "uuid": m.image_uuid.to_string(),
        "name": m.name,
        "version": m.version,
        "logical_bytes": m.logical_bytes(),
        "stored_bytes": m.stored_bytes,
        "seconds": seconds,
        "key_id": key.public_key().key_id(),
        "partition_note": report.partition_note,
        "partitions": m.partition_captures.iter()
            .map(|c| json!({"number": c.partition_number, "capture": c.describe()}))
            .collect::<Vec<_>>(),
    });
    print_result(&summary, || {
        println!(
            "captured {} ({}) into {}: {} stored, {:.0} MB/s",
            human_bytes(m.logical_bytes()),
            args.source.display(),
            args.output.display(),
            human_bytes(m.stored_bytes),
            m.logical_bytes() as f64 / seconds.max(1e-3) / 1e6
        );
        println!(
            "image {} signed by key {}",
            m.image_uuid,
            key.public_key().key_id()
        );
        if let Some(note) = &report.partition_note {
            println!("note: {note}");
        }
        for c in &m.partition_captures {
            let line = format!("partition {}: {}", c.partition_number, c.describe());
            match (c.file_system, &c.fallback_reason) {
                (Some(_), Some(_)) if !args.all_sectors => eprintln!("warning: {line}"),
                _ => println!("{line}"),
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let key = SigningKey::load(&args.key)?;
    // A key counts once toward the threshold; a second signature by it
    // would only list the same signer twice.
    let key_id = key.public_key().key_id();
    let (_, signers) = open_image(&args.image)?.claims()?;
    if let Some(earlier) = signers.iter().find(|s| s.key_id == key_id) {
        return Err(UsageError(format!(
            "{} already signed {} with key {key_id} (meaning {}); a key counts once, so nothing was added",
            earlier.name,
            args.image.display(),
            earlier.statement.meaning.as_str()
        ))
        .into());
    }
    let statement = SignerStatement {
        signer_name: signer_name(args.signer, &args.key)?,
        meaning: args.meaning,
        signed_unix: now_unix(),
    };
    reliquary_image::write::add_signature(&args.image, &key, &statement)?;
    let summary = json!({
        "image": args.image,
        "signer": statement.signer_name,
        "key_id": key.public_key().key_id(),
        "meaning": statement.meaning.as_str(),
        "signed": format_time(statement.signed_unix),
    });
    print_result(&summary, || {
        println!(
            "added a signature by {} ({}), meaning {}, to {}",
            statement.signer_name,
            key.public_key().key_id(),
            statement.meaning.as_str(),
            args.image.display()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let image = open_image(&args.image)?.open_unverified()?;
    print_result(&describe(&image), || {
        print_description(&image);
        println!();
        println!("UNVERIFIED: no trust store was consulted and no chunk was checked.");
        println!(
            "Run `reliquary verify {} --trust PATH` to prove it.",
            args.image.display()
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let trust = TrustStore::load(&args.trust)?;
    let image = open_image(&args.image)?.verify(&trust)?;
    let log = args.audit.open_log(&trust)?.map(Mutex::new);
    let operator = match &log {
        Some(log) => Some(
            args.audit
                .sign_in(&trust, &args.trust, Some(&mut lock_shared(log)))?,
        ),
        None => None,
    };
    let recording = log
        .as_ref()
        .zip(operator.as_ref())
        .map(|(log, operator)| Recording { log, operator });
    let meter = Meter::terminal_only("verify", image.manifest().stored_bytes);
    let verification = ops::verify_and_record(&image, recording, &|n| meter.add(n));
    meter.finish();
    if let Some(record) = verification.record {
        output::info(format!("audit record {}", record?));
    }
    verification.result?;
    let seconds = verification.took.as_secs_f64();
    let mut report = describe(&image);
    report["verified"] = json!(true);
    report["seconds"] = json!(seconds);
    print_result(&report, || {
        print_description(&image);
        println!();
        println!(
            "VERIFIED: the signature policy is met and all {} chunks match ({} checked in {seconds:.1} s).",
            image.index().chunks.len(),
            human_bytes(image.manifest().stored_bytes)
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn extract_cmd(args: ExtractArgs) -> anyhow::Result<ExitCode> {
    let trust = TrustStore::load(&args.trust)?;
    let image = open_image(&args.image)?.verify(&trust)?;
    let meter = Meter::terminal_only("extract", image.manifest().logical_bytes());
    let result = extract(&image, &args.output, &|n| meter.add(n));
    meter.finish();
    result?;
    let bytes = image.manifest().logical_bytes();
    print_result(
        &json!({"output": args.output, "bytes": bytes, "verified": true}),
        || {
            println!(
                "extracted {} to {} (verified)",
                human_bytes(bytes),
                args.output.display()
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

fn signer_name(explicit: Option<String>, key_path: &Path) -> anyhow::Result<String> {
    if let Some(name) = explicit {
        return Ok(name);
    }
    let pub_path = reliquary_image::keys::public_key_path(key_path);
    let name = reliquary_image::keys::PublicKey::load(&pub_path)
        .ok()
        .and_then(|(_, n)| n);
    name.ok_or_else(|| {
        UsageError(format!(
            "no signer name: pass --signer NAME or put a name in {}",
            pub_path.display()
        ))
        .into()
    })
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

fn describe(image: &Image<File>) -> serde_json::Value {
    let m = image.manifest();
    let (mut data, mut zero, mut unmapped) = (0u64, 0u64, 0u64);
    for e in image.extents() {
        let bytes = e.sector_count * u64::from(m.source.logical_sector_size);
        match e.kind {
            ExtentKind::Data { .. } => data += bytes,
            ExtentKind::Zero => zero += bytes,
            ExtentKind::Unmapped => unmapped += bytes,
        }
    }
    let scheme = match m.partition_table.scheme {
        PartitionScheme::None => json!({"kind": "none"}),
        PartitionScheme::Mbr { disk_signature } => {
            json!({"kind": "mbr", "disk_signature": format!("{disk_signature:08x}")})
        }
        PartitionScheme::Gpt { disk_guid } => {
            json!({"kind": "gpt", "disk_guid": reliquary_appliance::partition::guid_to_string(&disk_guid)})
        }
    };
    json!({
        "trust": match image.trust() { Trust::Verified => "verified", Trust::Unverified => "unverified" },
        "uuid": m.image_uuid.to_string(),
        "name": m.name,
        "description": m.description,
        "version": m.version,
        "created": format_time(m.created_unix),
        "creator": m.creator,
        "compatible": m.compatible,
        "source": {
            "size_sectors": m.source.size_sectors,
            "size_bytes": m.logical_bytes(),
            "logical_sector_size": m.source.logical_sector_size,
            "physical_sector_size": m.source.physical_sector_size,
            "model": m.source.model,
            "serial": m.source.serial,
        },
        "partition_table": scheme,
        "partitions": m.partition_table.partitions.iter().map(|p| json!({
            "number": p.number, "start_sector": p.start_sector, "sector_count": p.sector_count,
            "type": p.type_code, "name": p.name, "bootable": p.bootable,
            "capture": m.partition_captures.iter().find(|c| c.partition_number == p.number).map(|c| json!({
                "file_system": c.file_system.map(|f| f.as_str()),
                "volume_serial": c.volume_serial,
                "mode": c.mode.as_str(),
                "fallback_reason": c.fallback_reason,
                "proof": c.proof,
                "description": c.describe(),
            })),
        })).collect::<Vec<_>>(),
        "chunk_size": m.chunk_size,
        "stored_bytes": m.stored_bytes,
        "logical_bytes": m.logical_bytes(),
        "chunks": image.index().chunks.len(),
        "extents": {"count": image.index().extents.len(), "data_bytes": data, "zero_bytes": zero, "unmapped_bytes": unmapped},
        "image_digest": hex::encode(m.image_digest),
        "manifest_sha256": hex::encode(image.manifest_sha256()),
        "signers": image.signers().iter().map(|s| json!({
            "key_id": s.key_id, "name": s.name, "meaning": s.statement.meaning.as_str(),
            "signed": format_time(s.statement.signed_unix), "status": s.status.as_str(),
        })).collect::<Vec<_>>(),
    })
}

fn print_description(image: &Image<File>) {
    let d = describe(image);
    let m = image.manifest();
    println!("Image        {}  version {}", m.name, m.version);
    println!("UUID         {}", m.image_uuid);
    println!(
        "Created      {} by {}",
        format_time(m.created_unix),
        m.creator
    );
    if !m.description.is_empty() {
        println!("Description  {}", m.description);
    }
    if !m.compatible.is_empty() {
        println!("Compatible   {}", m.compatible.join(", "));
    }
    println!(
        "Source disk  {} ({} sectors of {} B, physical {} B){}{}",
        human_bytes(m.logical_bytes()),
        m.source.size_sectors,
        m.source.logical_sector_size,
        m.source.physical_sector_size,
        m.source
            .model
            .as_deref()
            .map(|s| format!(", model {s}"))
            .unwrap_or_default(),
        m.source
            .serial
            .as_deref()
            .map(|s| format!(", serial {s}"))
            .unwrap_or_default(),
    );
    println!(
        "Partitions   {}",
        d["partition_table"]["kind"]
            .as_str()
            .unwrap_or("none")
            .to_uppercase()
    );
    for p in &m.partition_table.partitions {
        println!(
            "  {:>2}  start {:>12}  {:>10}  type {:<38} {}{}",
            p.number,
            p.start_sector,
            human_bytes(p.sector_count * u64::from(m.source.logical_sector_size)),
            p.type_code,
            if p.bootable { "boot " } else { "" },
            p.name.as_deref().unwrap_or("")
        );
        if let Some(c) = m
            .partition_captures
            .iter()
            .find(|c| c.partition_number == p.number)
        {
            let serial = c
                .volume_serial
                .as_deref()
                .map(|s| format!(", serial {s}"))
                .unwrap_or_default();
            println!("      {}{serial}", c.describe());
            for check in &c.proof {
                println!("        proven: {check}");
            }
            if c.mode == CaptureMode::UsedClusters && c.proof.is_empty() {
                println!("        no proof recorded (an image of format version 2)");
            }
        }
    }
    let e = &d["extents"];
    println!(
        "Stored       {} in {} chunks of up to {}; data {}, zero {}, unmapped {} in {} extents",
        human_bytes(m.stored_bytes),
        image.index().chunks.len(),
        human_bytes(u64::from(m.chunk_size)),
        human_bytes(e["data_bytes"].as_u64().unwrap_or(0)),
        human_bytes(e["zero_bytes"].as_u64().unwrap_or(0)),
        human_bytes(e["unmapped_bytes"].as_u64().unwrap_or(0)),
        e["count"],
    );
    println!("Image digest {}", hex::encode(m.image_digest));
    println!(
        "Manifest     sha256 {}",
        hex::encode(image.manifest_sha256())
    );
    println!("Signers");
    for s in image.signers() {
        println!(
            "  {} ({}) {} at {}: {}",
            s.name,
            s.key_id,
            s.statement.meaning.as_str(),
            format_time(s.statement.signed_unix),
            match s.status {
                reliquary_image::SignerStatus::Unchecked =>
                    "signature valid, key not checked against a trust store",
                other => other.as_str(),
            }
        );
    }
}

/// Parses sizes like `4M`, `64K`, `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&text[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("`{text}` is not a size like 4096, 64K or 4M"))
}

fn parse_sector_size(text: &str) -> Result<u32, String> {
    match text {
        "512" => Ok(512),
        "4096" => Ok(4096),
        _ => Err("the sector size must be 512 or 4096".into()),
    }
}
