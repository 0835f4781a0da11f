//! The sealed stick under QEMU (TCG): a test stick is built once from
//! Debian's kernel and this build's binaries (`scripts/build-test-stick`),
//! then booted with SeaBIOS and with OVMF as a USB disk next to blank target
//! disks. The test drives the recovery UI over the serial console like a
//! technician, restores signed "controller" disks, powers off from the UI,
//! boots each target alone and waits for the marker its own boot code prints.
//!
//! Also: a zeroed-boot-code image restores but its target does not boot (the
//! test can fail), a tampered image shows as damaged and cannot be chosen,
//! a stick with one flipped root byte refuses to start, the audit partition
//! verifies and names the operator, and the target's partition table reads
//! back as the source's.
//!
//! The boot chain against someone holding the stick (STICK.md, threat
//! model): the UEFI stick boots under Secure Boot with the test key
//! enrolled (Debian ovmf's snakeoil key signs the stick's kernel image); a
//! modified kernel image is refused by the firmware, and so is the pristine
//! stick where only Microsoft's keys are enrolled; a `RELIQBOOT` FAT whose
//! configuration asks for `rdinit=/bin/sh`, on a USB disk before or after
//! the stick or on the target disk, changes nothing under SeaBIOS or OVMF;
//! on the audit partition, and every other tampering of the boot bytes,
//! `stick verify` names it. The default (VGA) stick's sign-in, read by OCR
//! of QEMU's screendump, shows no boot output and none of the keys typed
//! while it booted.
//!
//! Needs root, `qemu-system-x86_64`, OVMF and the stick's Debian packages
//! (see `.ci/run`). Timings are printed with `--nocapture`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reliquary_tests::{reliquary_bin, running_as_root, skip_or_fail};

const OPERATOR: &str = "tech1";
/// The operator's PIN (21 CFR Part 11: an id and a secret).
const PIN: &str = "246813";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF that enforces Secure Boot (needs SMM), with a variable store whose
/// db holds either Debian's test key or only Microsoft's keys.
const OVMF_CODE_SECURE_BOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS_TEST_KEY: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
const OVMF_VARS_MICROSOFT: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// The test key enrolled in `OVMF_VARS_TEST_KEY`, and its passphrase.
/// Test-only: no release build or real stick is ever signed with it.
const TEST_SIGNING_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const TEST_SIGNING_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
const TEST_SIGNING_PASSPHRASE: &str = "snakeoil";
/// Keys typed on the VGA console's keyboard while the stick boots.
const TYPED_AHEAD: &str = "qwkxqwkx";
/// What OVMF prints when Secure Boot refuses the stick (STICK.md).
const FIRMWARE_REFUSAL: &str = "Access Denied";
/// From power-on to the sign-in screen, under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const SCREEN_TIMEOUT: Duration = Duration::from_secs(60);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(240);
/// A controller disk prints its marker within seconds of power-on; this
/// leaves room for a slow CI machine.
const TARGET_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const TARGET_SIZE: u64 = 64 << 20;
const BIOS_SERIAL: &str = "TARGET01";
const ZEROED_SERIAL: &str = "TARGET02";
const UEFI_SERIAL: &str = "TARGET03";

const BIOS_IMAGE: &str = "BIOS controller";
const ZEROED_IMAGE: &str = "Zeroed boot code";
const UEFI_IMAGE: &str = "UEFI controller";
const TAMPERED_IMAGE: &str = "Tampered controller";

/// One QEMU at a time: two TCG guests on a 2-core runner only time out.
static QEMU_TURN: Mutex<()> = Mutex::new(());
static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();

#[test]
fn bios_stick_restores_a_controller_that_boots_and_one_that_cannot() {
    let Some(fixture) = fixture() else { return };
    let _turn = QEMU_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().expect("tempdir");
    let stick = fixture.stick_copy(work.path());
    let good_target = blank_disk(work.path(), "bios-target.img");
    let zeroed_target = blank_disk(work.path(), "zeroed-target.img");

    // A RELIQBOOT FAT asking for a shell on a USB disk before the stick.
    let hostile = hostile_boot_disk(&fixture.stick, work.path());
    let mut vm = Qemu::start_with(
        &Firmware::Bios,
        &stick,
        &[(&good_target, BIOS_SERIAL), (&zeroed_target, ZEROED_SERIAL)],
        Some((&hostile, DiskOrder::BeforeStick)),
    );
    vm.wait_screen("Operator sign-in", BOOT_TIMEOUT);
    let boot_to_ui = vm.started.elapsed();
    assert_no_shell(&vm);
    sign_in(&mut vm, OPERATOR);
    vm.wait_screen("Images in the vault", SCREEN_TIMEOUT);

    // The tampered image: its full check fails and it cannot be chosen.
    vm.select_row(TAMPERED_IMAGE);
    vm.send(b"v");
    let screen = vm.wait_screen("DAMAGED", RESTORE_TIMEOUT);
    assert!(screen.contains("fails its SHA-256"), "{screen}");
    vm.send(b"\x1b");
    vm.wait_screen("Images in the vault", SCREEN_TIMEOUT);
    vm.send(b"\r");
    vm.wait_screen("cannot be chosen", SCREEN_TIMEOUT);

    let restore_time = restore(&mut vm, BIOS_IMAGE, "vda", BIOS_SERIAL);
    restore(&mut vm, ZEROED_IMAGE, "vdb", ZEROED_SERIAL);
    power_off_from_ui(&mut vm);
    drop(vm);
    eprintln!(
        "stick (SeaBIOS, TCG): boot to UI {:.1} s, restore of a {} MiB image {:.1} s, stick {} MiB",
        boot_to_ui.as_secs_f64(),
        file_size(&fixture.bios_disk) >> 20,
        restore_time.as_secs_f64(),
        file_size(&fixture.stick) >> 20,
    );

    assert_eq!(
        partition_table(&good_target),
        partition_table(&fixture.bios_disk),
        "the target's partition table must read back as the image's"
    );
    let booted = boot_target(&Firmware::Bios, &good_target, &fixture.bios_marker);
    assert!(booted.is_ok(), "{}", booted.unwrap_err());

    // The zeroed image restored fine, but its target must not boot, and the
    // check must say exactly that.
    let zeroed = boot_target(&Firmware::Bios, &zeroed_target, &fixture.bios_marker);
    let error = zeroed.expect_err("a disk with zeroed boot code cannot print the marker");
    assert!(
        error.starts_with("the target did not boot: no marker"),
        "{error}"
    );

    // The session wrote only the audit partition, which the manifest leaves out.
    let verify = stick_verify(&stick, &fixture.stick);
    assert!(verify.status.success(), "{verify:?}");

    let records = audit_records(&stick, work.path());
    let finished: Vec<_> = records
        .iter()
        .filter(|r| r["record"]["kind"] == "RestoreFinished")
        .collect();
    assert_eq!(finished.len(), 2, "two restores are logged: {records:?}");
    for record in finished {
        assert_eq!(record["result"], "success", "{record}");
        assert_eq!(
            record["record"]["meta"]["operator"]["id"], OPERATOR,
            "{record}"
        );
    }
}

#[test]
fn uefi_stick_under_secure_boot_restores_a_controller_that_boots() {
    let Some(fixture) = fixture() else { return };
    let _turn = QEMU_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().expect("tempdir");
    let stick = fixture.stick_copy(work.path());
    let target = blank_disk(work.path(), "uefi-target.img");
    let firmware = Firmware::secure_boot(work.path(), OVMF_VARS_TEST_KEY);
    let hostile = hostile_boot_disk(&fixture.stick, work.path());

    let mut vm = Qemu::start_with(
        &firmware,
        &stick,
        &[(&target, UEFI_SERIAL)],
        Some((&hostile, DiskOrder::BeforeStick)),
    );
    vm.wait_screen("Operator sign-in", BOOT_TIMEOUT);
    let boot_to_ui = vm.started.elapsed();
    assert_no_shell(&vm);
    let shown_key = first_boot_public_key(&vm.raw_text());
    sign_in(&mut vm, OPERATOR);
    vm.wait_screen("Images in the vault", SCREEN_TIMEOUT);
    let restore_time = restore(&mut vm, UEFI_IMAGE, "vda", UEFI_SERIAL);
    power_off_from_ui(&mut vm);
    drop(vm);
    eprintln!(
        "stick (OVMF Secure Boot, TCG): boot to UI {:.1} s, restore of a {} MiB image {:.1} s",
        boot_to_ui.as_secs_f64(),
        file_size(&fixture.uefi_disk) >> 20,
        restore_time.as_secs_f64(),
    );

    assert_eq!(
        partition_table(&target),
        partition_table(&fixture.uefi_disk),
        "the target's partition table must read back as the image's"
    );
    let booted = boot_target(&Firmware::uefi(work.path()), &target, &fixture.uefi_marker);
    assert!(booted.is_ok(), "{}", booted.unwrap_err());

    let records = audit_records(&stick, work.path());
    let finished: Vec<_> = records
        .iter()
        .filter(|r| r["record"]["kind"] == "RestoreFinished")
        .collect();
    assert_eq!(
        records[0]["record"]["kind"], "LogCreated",
        "{:?}",
        records[0]
    );
    assert!(
        records[0].to_string().contains(&shown_key),
        "the log's first record must name the key shown at first boot ({shown_key}): {}",
        records[0]
    );
    assert_eq!(finished.len(), 1, "{records:?}");
    assert_eq!(finished[0]["result"], "success");
    assert_eq!(finished[0]["record"]["meta"]["operator"]["id"], OPERATOR);
}

#[test]
fn stick_with_one_flipped_root_byte_refuses_to_start() {
    let Some(fixture) = fixture() else { return };
    let _turn = QEMU_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().expect("tempdir");
    let stick = fixture.stick_copy(work.path());
    let (start, sectors) = partition_extent(&stick, "reliquary-root");
    flip_byte(&stick, start * 512 + sectors * 512 / 2);
    // A workstation sees it before booting it.
    let verify = stick_verify(&stick, &fixture.stick);
    assert_eq!(verify.status.code(), Some(3), "{verify:?}");
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("DIFFERS partition reliquary-root")),
        "{report}"
    );
    let target = blank_disk(work.path(), "target.img");

    let vm = Qemu::start(&Firmware::Bios, &stick, &[(&target, BIOS_SERIAL)]);
    let output = vm.wait_raw("THE STICK CANNOT START", BOOT_TIMEOUT);
    assert!(
        output.contains("verity check failed") || output.contains("does not match its root hash"),
        "the refusal should name the verity check:\n{output}"
    );
    assert!(
        !vm.screen().contains("Operator sign-in"),
        "the UI must not start"
    );
    // Nothing on the stick was written: the audit partition is still empty.
    drop(vm);
    let audit = extract_partition(&stick, "reliquary-audit", work.path());
    let listing = run(Command::new("debugfs").args(["-R", "ls -l /"]).arg(&audit));
    assert!(!listing.contains(" log"), "{listing}");
}

#[test]
fn secure_boot_refuses_a_modified_kernel_image_and_a_stick_it_has_no_key_for() {
    let Some(fixture) = fixture() else { return };
    let _turn = QEMU_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().expect("tempdir");

    // The command line inside the signed image asks for a shell instead.
    let edited_dir = tempfile::tempdir_in(work.path()).expect("tempdir");
    let edited = fixture.stick_copy(edited_dir.path());
    edit_kernel_image(&edited, b"loglevel=3 panic=30", b"rdinit=/bin/sh     ");
    let verify = stick_verify(&edited, &fixture.stick);
    assert_eq!(verify.status.code(), Some(3), "{verify:?}");
    assert_reports(&verify, "DIFFERS partition reliquary-boot");
    let firmware = Firmware::secure_boot(work.path(), OVMF_VARS_TEST_KEY);
    assert_firmware_refuses(&firmware, &edited);

    // The pristine stick where only Microsoft's keys are enrolled (a
    // machine whose db was never given the site's key).
    let pristine_dir = tempfile::tempdir_in(work.path()).expect("tempdir");
    let pristine = fixture.stick_copy(pristine_dir.path());
    let firmware = Firmware::secure_boot(work.path(), OVMF_VARS_MICROSOFT);
    assert_firmware_refuses(&firmware, &pristine);
}

#[test]
fn stick_verify_names_every_tampering_of_the_boot_bytes() {
    let Some(fixture) = fixture() else { return };
    let work = tempfile::tempdir().expect("tempdir");
    let hostile = hostile_boot_disk(&fixture.stick, work.path());
    type Tamper<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Tamper, &[&str])> = vec![
        (
            "a RELIQBOOT FAT written over the audit partition",
            Box::new(|stick: &Path| {
                let (start, _) = partition_extent(stick, "reliquary-audit");
                write_at(stick, start * 512, &std::fs::read(&hostile).expect("read"));
            }),
            &["DIFFERS partition reliquary-audit"],
        ),
        (
            "one byte of the MBR's boot code",
            Box::new(|stick: &Path| flip_byte(stick, 0x40)),
            &["DIFFERS protective MBR"],
        ),
        (
            "one byte of GRUB's core.img (which holds the command line)",
            Box::new(|stick: &Path| {
                let (start, _) = partition_extent(stick, "bios-boot");
                flip_byte(stick, start * 512 + 1000);
            }),
            &["DIFFERS partition bios-boot"],
        ),
        (
            "a changed partition GUID",
            Box::new(|stick: &Path| {
                run(Command::new("sgdisk")
                    .args(["-u", "3:52454c51-0000-4000-8000-000000000bad"])
                    .arg(stick));
            }),
            &["DIFFERS primary GPT", "DIFFERS backup GPT"],
        ),
        (
            "an extra partition",
            Box::new(|stick: &Path| {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(stick)
                    .expect("open");
                file.set_len(file_size(stick) + (4 << 20)).expect("grow");
                run(Command::new("sgdisk").arg("-e").arg(stick));
                run(Command::new("sgdisk")
                    .args(["-n", "7:0:0", "-c", "7:extra"])
                    .arg(stick));
            }),
            &["DIFFERS primary GPT", "an extra partition"],
        ),
        (
            "a swapped ESP",
            Box::new(|stick: &Path| {
                let (start, _) = partition_extent(stick, "reliquary-boot");
                write_at(stick, start * 512, &std::fs::read(&hostile).expect("read"));
            }),
            &["DIFFERS partition reliquary-boot"],
        ),
    ];
    for (what, tamper, expected) in cases {
        let dir = tempfile::tempdir_in(work.path()).expect("tempdir");
        let stick = fixture.stick_copy(dir.path());
        tamper(&stick);
        let verify = stick_verify(&stick, &fixture.stick);
        assert_eq!(verify.status.code(), Some(3), "{what}: {verify:?}");
        for line in expected {
            assert_reports(&verify, line);
        }
    }
    // And the pristine stick passes, audit partition included.
    let pristine = fixture.stick_copy(work.path());
    let verify = stick_verify(&pristine, &fixture.stick);
    assert!(verify.status.success(), "{verify:?}");
}

#[test]
fn vga_sign_in_is_clean_and_reliqboot_disks_after_the_stick_change_nothing() {
    // The default stick (UI on tty1, no serial console for it), read the
    // way a technician at a monitor reads it: QEMU's screendump through OCR.
    // Two boots prove two things, to keep CI short: a RELIQBOOT FAT asking
    // for a shell on a USB disk after the stick and on the target disk (the
    // other bus order than the restore tests'), under SeaBIOS and under
    // OVMF without Secure Boot, so only the boot chain decides what starts;
    // and the console the UI owns.
    let Some(fixture) = fixture() else { return };
    if which("tesseract").is_none() {
        skip_or_fail("tesseract is not installed (tesseract-ocr, see .ci/run)");
        return;
    }
    let vga_stick = fixture.vga_stick();
    let _turn = QEMU_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().expect("tempdir");
    let hostile = hostile_boot_disk(&fixture.stick, work.path());
    for firmware in [Firmware::Bios, Firmware::uefi(work.path())] {
        let name = firmware.name();
        let dir = tempfile::tempdir_in(work.path()).expect("tempdir");
        let stick = dir.path().join("stick.img");
        let hostile_target = dir.path().join("hostile-target.img");
        for (from, to) in [(vga_stick, &stick), (hostile.as_path(), &hostile_target)] {
            run(Command::new("cp").arg("--sparse=always").arg(from).arg(to));
        }
        let socket = dir.path().join("monitor.sock");
        let vm = Qemu::start_with_monitor(
            &firmware,
            &stick,
            &[(&hostile_target, BIOS_SERIAL)],
            (&hostile, DiskOrder::AfterStick),
            &socket,
        );
        // The init says this on every console, then waits 5 s before the
        // UI starts: keys typed now wait in tty1's input queue, echoed.
        vm.wait_raw("Record the key id above", BOOT_TIMEOUT);
        let monitor = Monitor::connect(&socket);
        for key in TYPED_AHEAD.chars() {
            monitor.command(&format!("sendkey {key}"));
        }
        let screen = monitor.wait_for_text("Operator id", BOOT_TIMEOUT, dir.path());
        // One more look once the UI has settled.
        std::thread::sleep(Duration::from_secs(3));
        let screen = monitor.read_screen(dir.path()).unwrap_or(screen);
        assert!(screen.contains("Operator sign-in"), "{name}:\n{screen}");
        for boot_text in ["First boot", "Record the key", "RELIQUARY", "recovery UI"] {
            assert!(
                !screen.contains(boot_text),
                "{name}: boot output {boot_text:?} shows through the UI:\n{screen}"
            );
        }
        let field = screen
            .lines()
            .find_map(|line| line.split("Operator id").nth(1))
            .unwrap_or_else(|| panic!("{name}: no operator id field:\n{screen}"));
        assert!(
            field.trim().trim_matches('_').trim().is_empty(),
            "{name}: keys typed during boot reached the operator id ({field:?}):\n{screen}"
        );
        assert_no_shell(&vm);
        eprintln!(
            "stick ({name}, VGA console, RELIQBOOT disks after it): clean sign-in after {:.1} s",
            vm.started.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn stick_build_refuses_to_run_without_a_signing_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (trust, vault) = (dir.path().join("trust"), dir.path().join("vault"));
    std::fs::create_dir(&trust).expect("mkdir");
    std::fs::create_dir(&vault).expect("mkdir");
    std::fs::write(trust.join("eng.pub"), "not read before the refusal\n").expect("write");
    let out =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-stick"))
            .arg("--out")
            .arg(dir.path().join("stick.img"))
            .arg("--trust")
            .arg(&trust)
            .arg("--vault")
            .arg(&vault)
            .output()
            .expect("runs build-test-stick");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no Secure Boot signing key"), "{stderr}");
    assert!(!dir.path().join("stick.img").exists());
}

#[test]
fn stick_build_refuses_a_trust_store_without_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (trust, vault) = (dir.path().join("trust"), dir.path().join("vault"));
    std::fs::create_dir(&trust).expect("mkdir");
    std::fs::create_dir(&vault).expect("mkdir");
    std::fs::write(trust.join("operators"), "tech1 Someone\n").expect("write");
    let out =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-stick"))
            .arg("--out")
            .arg(dir.path().join("stick.img"))
            .arg("--trust")
            .arg(&trust)
            .arg("--vault")
            .arg(&vault)
            .output()
            .expect("runs build-test-stick");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no .pub key"), "{stderr}");
    assert!(!dir.path().join("stick.img").exists());
}

/// The appliance public key the init printed at first boot.
fn first_boot_public_key(serial: &str) -> String {
    let line = serial
        .lines()
        .find(|l| l.contains("public key:"))
        .unwrap_or_else(|| panic!("no public key shown at first boot:\n{serial}"));
    let key = line.split("public key:").nth(1).unwrap_or("").trim();
    assert_eq!(key.len(), 64, "{line:?}");
    key.to_string()
}

/// Neither the hostile disk's `rdinit=/bin/sh` nor any shell reached the
/// console, and the init's search for its partitions printed no errors
/// (it once printed `grep: /sys/class/block/*/uevent` until a disk came).
fn assert_no_shell(vm: &Qemu) {
    let raw = vm.raw_text();
    assert!(
        !raw.contains("rdinit=/bin/sh") && !raw.contains("job control turned off"),
        "a shell or the hostile command line reached the console:\n{}",
        tail(&raw, 3000)
    );
    assert!(
        !raw.contains("grep: "),
        "the init printed errors:\n{}",
        tail(&raw, 3000)
    );
}

/// Boots `stick` alone and expects the firmware to refuse it before any of
/// its code runs: OVMF's words, which STICK.md quotes.
fn assert_firmware_refuses(firmware: &Firmware, stick: &Path) {
    let vm = Qemu::start(firmware, stick, &[]);
    let output = vm.wait_raw(FIRMWARE_REFUSAL, BOOT_TIMEOUT);
    assert!(
        output.contains("failed to load Boot0001 \"UEFI QEMU QEMU USB HARDDRIVE"),
        "the refusal must name the stick:\n{}",
        tail(&output, 3000)
    );
    assert!(
        !output.contains("RELIQUARY") && !vm.screen().contains("Operator sign-in"),
        "nothing of the stick may run:\n{}",
        tail(&output, 3000)
    );
}

/// `stick verify`'s report holds a line starting with `prefix`, or one
/// containing it for the detail of an extra partition.
fn assert_reports(verify: &std::process::Output, wanted: &str) {
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with(wanted) || (l.starts_with("DIFFERS") && l.contains(wanted))),
        "no {wanted:?} in the report:\n{report}"
    );
}

/// A FAT labelled `RELIQBOOT` as the attack in issue 18 made it: the
/// stick's own kernel and initramfs, and a GRUB configuration that adds
/// `rdinit=/bin/sh`. GRUB's old `search --label` would have booted it.
fn hostile_boot_disk(built_stick: &Path, dir: &Path) -> PathBuf {
    let fat = dir.join("reliqboot.fat");
    if fat.exists() {
        return fat;
    }
    let (start, _) = partition_extent(built_stick, "reliquary-boot");
    let esp = format!("{}@@{}", built_stick.display(), start * 512);
    let fat_arg = fat.display().to_string();
    run(Command::new("mkfs.vfat")
        .args(["-C", "-n", "RELIQBOOT"])
        .arg(&fat)
        .arg("32768"));
    let config = dir.join("grub.cfg");
    std::fs::write(
        &config,
        "set timeout=0\nmenuentry shell {\n\
         linux /reliquary/vmlinuz console=ttyS0,115200 console=tty1 rdinit=/bin/sh\n\
         initrd /reliquary/initramfs.cpio.gz\n}\n",
    )
    .expect("write grub.cfg");
    run(Command::new("mmd")
        .args(["-i", &fat_arg, "::/grub", "::/reliquary"])
        .env("MTOOLS_SKIP_CHECK", "1"));
    for file in ["vmlinuz", "initramfs.cpio.gz"] {
        let local = dir.join(file);
        run(Command::new("mcopy")
            .args(["-n", "-i", &esp])
            .arg(format!("::/reliquary/{file}"))
            .arg(&local)
            .env("MTOOLS_SKIP_CHECK", "1"));
        run(Command::new("mcopy")
            .args(["-i", &fat_arg])
            .arg(&local)
            .arg(format!("::/reliquary/{file}"))
            .env("MTOOLS_SKIP_CHECK", "1"));
    }
    run(Command::new("mcopy")
        .args(["-i", &fat_arg])
        .arg(&config)
        .arg("::/grub/grub.cfg")
        .env("MTOOLS_SKIP_CHECK", "1"));
    fat
}

/// Replaces `from` by `to` (same length) in the signed kernel image on the
/// stick's ESP, as someone with mtools and a hex editor would.
fn edit_kernel_image(stick: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let (start, _) = partition_extent(stick, "reliquary-boot");
    let esp = format!("{}@@{}", stick.display(), start * 512);
    let local = stick.with_extension("efi");
    run(Command::new("mcopy")
        .args(["-n", "-i", &esp, "::/EFI/BOOT/BOOTX64.EFI"])
        .arg(&local)
        .env("MTOOLS_SKIP_CHECK", "1"));
    let mut image = std::fs::read(&local).expect("read the kernel image");
    let at = image
        .windows(from.len())
        .position(|w| w == from)
        .expect("the command line is in the kernel image");
    image[at..at + to.len()].copy_from_slice(to);
    std::fs::write(&local, image).expect("write the kernel image");
    run(Command::new("mcopy")
        .args(["-o", "-i", &esp])
        .arg(&local)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .env("MTOOLS_SKIP_CHECK", "1"));
}

/// Signs in on the sign-in screen. The only place that knows the key
/// sequence, so a PIN step changes one function.
fn sign_in(vm: &mut Qemu, operator: &str) {
    vm.type_text(operator);
    vm.send(b"\r");
    vm.type_text(PIN);
    vm.send(b"\r");
}

/// From the vault list: picks `image`, the target whose device name is
/// `device`, types the confirmation code (the serial's last 4 characters)
/// and waits for the result. Returns to the vault list; returns the time
/// from Enter on the code to the result screen.
fn restore(vm: &mut Qemu, image: &str, device: &str, serial: &str) -> Duration {
    vm.wait_screen("Images in the vault", SCREEN_TIMEOUT);
    vm.select_row(image);
    vm.send(b"\r");
    vm.wait_screen("Image details", SCREEN_TIMEOUT);
    vm.send(b"\r");
    vm.wait_screen(device, SCREEN_TIMEOUT);
    vm.select_row(device);
    vm.send(b"\r");
    vm.wait_screen("To confirm", SCREEN_TIMEOUT);
    // The first meaning of the list, the work order, then the code.
    vm.send(b"\r");
    vm.type_text("WO-STICK");
    vm.send(b"\r");
    vm.type_text(&serial[serial.len() - 4..]);
    let started = Instant::now();
    vm.send(b"\r");
    let screen = vm.wait_screen("RESTORE", RESTORE_TIMEOUT);
    assert!(screen.contains("RESTORE SUCCEEDED"), "{screen}");
    let elapsed = started.elapsed();
    vm.send(b"\r");
    elapsed
}

/// `q` leaves the UI; the init then powers the machine off.
fn power_off_from_ui(vm: &mut Qemu) {
    vm.wait_screen("Images in the vault", SCREEN_TIMEOUT);
    vm.send(b"q");
    assert!(
        vm.wait_exit(SCREEN_TIMEOUT),
        "the stick did not power off after the UI quit:\n{}",
        vm.raw_text()
    );
}

/// Boots `disk` alone and waits for `marker` on the serial console.
fn boot_target(firmware: &Firmware, disk: &Path, marker: &str) -> Result<Duration, String> {
    let mut vm = Qemu::start_target(firmware, disk);
    let started = Instant::now();
    while started.elapsed() < TARGET_BOOT_TIMEOUT {
        if vm.raw_text().contains(marker) {
            return Ok(started.elapsed());
        }
        if vm.exited() && !vm.raw_text().contains(marker) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "the target did not boot: no marker {marker:?} on its serial console within {} s",
        TARGET_BOOT_TIMEOUT.as_secs()
    ))
}

/// What the test built once: keys, controller disks, vault, the stick.
#[derive(Debug)]
struct Fixture {
    _dir: tempfile::TempDir,
    /// The serial-console stick every QEMU test drives.
    stick: PathBuf,
    /// The build's inputs, for [`Fixture::vga_stick`].
    stick_build: Vec<std::ffi::OsString>,
    vga_stick: OnceLock<PathBuf>,
    bios_disk: PathBuf,
    uefi_disk: PathBuf,
    bios_marker: String,
    uefi_marker: String,
}

impl Fixture {
    /// The default stick (UI on tty1, no `--serial`), built on first use
    /// from the same inputs as the serial one.
    fn vga_stick(&self) -> &Path {
        self.vga_stick.get_or_init(|| {
            let stick = self.stick.with_file_name("vga-stick.img");
            let started = Instant::now();
            run(Command::new(build_script())
                .args(&self.stick_build)
                .arg("--out")
                .arg(&stick));
            eprintln!(
                "stick (VGA console): built in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            stick
        })
    }

    fn stick_copy(&self, dir: &Path) -> PathBuf {
        let copy = dir.join("stick.img");
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.stick)
            .arg(&copy));
        copy
    }
}

fn fixture() -> Option<&'static Fixture> {
    match FIXTURE.get_or_init(build_fixture) {
        Ok(fixture) => Some(fixture),
        Err(why) => {
            skip_or_fail(why);
            None
        }
    }
}

fn build_fixture() -> Result<Fixture, String> {
    if !running_as_root() {
        return Err("the stick build needs root".into());
    }
    for tool in [
        "qemu-system-x86_64",
        "genimage",
        "mksquashfs",
        "veritysetup",
        "grub-mkimage",
        "mkfs.vfat",
        "mcopy",
        "busybox",
        "debugfs",
        "sfdisk",
        "sgdisk",
        "cpio",
        "objcopy",
        "sbsign",
        "openssl",
        "mmd",
    ] {
        if which(tool).is_none() {
            return Err(format!("{tool} is not installed (see .ci/run)"));
        }
    }
    for file in [
        OVMF_CODE,
        OVMF_CODE_SECURE_BOOT,
        OVMF_VARS_TEST_KEY,
        OVMF_VARS_MICROSOFT,
        TEST_SIGNING_KEY,
        TEST_SIGNING_CERT,
    ] {
        if !Path::new(file).exists() {
            return Err(format!("{file} is missing (install ovmf)"));
        }
    }
    if !Path::new("/usr/lib/systemd/boot/efi/linuxx64.efi.stub").exists() {
        return Err("systemd's EFI stub is missing (install systemd-boot-efi)".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let disk_script = repo.join("tests/fixtures/stick/controller-disk.sh");
    let unique = std::process::id();
    let bios_marker = format!("RELIQUARY-TARGET-BOOTED-BIOS-{unique}");
    let uefi_marker = format!("RELIQUARY-TARGET-BOOTED-UEFI-{unique}");

    let reliquary = reliquary_bin();
    let key = root.join("eng.key");
    run(Command::new(&reliquary)
        .args(["keygen", "--name", "Stick Test Engineer", "--out"])
        .arg(&key));
    let trust = root.join("trust");
    std::fs::create_dir(&trust).map_err(|e| e.to_string())?;
    std::fs::copy(root.join("eng.key.pub"), trust.join("eng.pub")).map_err(|e| e.to_string())?;
    let mut add = Command::new(&reliquary)
        .args(["operators", "add", "--trust"])
        .arg(&trust)
        .args([OPERATOR, "--name", "Stick Test Technician"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = add.stdin.take() {
        std::io::Write::write_all(&mut stdin, format!("{PIN}\n").as_bytes())
            .map_err(|e| e.to_string())?;
    }
    if !add.wait().map_err(|e| e.to_string())?.success() {
        return Err("reliquary operators add failed".into());
    }

    let vault = root.join("vault");
    std::fs::create_dir(&vault).map_err(|e| e.to_string())?;
    let disks = [
        ("bios", "bios.img", bios_marker.as_str(), None, BIOS_IMAGE),
        (
            "bios",
            "zeroed.img",
            bios_marker.as_str(),
            Some("--zero-boot-code"),
            ZEROED_IMAGE,
        ),
        ("uefi", "uefi.img", uefi_marker.as_str(), None, UEFI_IMAGE),
        ("bios", "tampered.img", "TAMPERED", None, TAMPERED_IMAGE),
    ];
    for (kind, file, marker, extra, name) in disks {
        let disk = root.join(file);
        let mut cmd = Command::new(&disk_script);
        cmd.arg(kind).arg(&disk).arg(marker).args(extra);
        run(&mut cmd);
        let image = vault.join(file.replace(".img", ".rimg"));
        run(Command::new(&reliquary)
            .arg("capture")
            .arg(&disk)
            .arg("-o")
            .arg(&image)
            .arg("--key")
            .arg(&key)
            .args([
                "--name",
                name,
                "--image-version",
                "1",
                "--chunk-size",
                "64K",
            ]));
    }
    // Damage the tampered image's data after it was signed.
    let tampered = vault.join("tampered.rimg");
    flip_byte(&tampered, file_size(&tampered) / 2);

    // sbsign takes an unencrypted key: the test key, decrypted here.
    let signing_key = root.join("test-signing.key");
    run(Command::new("openssl")
        .args(["pkey", "-in", TEST_SIGNING_KEY, "-passin"])
        .arg(format!("pass:{TEST_SIGNING_PASSPHRASE}"))
        .arg("-out")
        .arg(&signing_key));

    let stick = root.join("stick.img");
    let bins = reliquary.parent().expect("binary directory");
    let stick_build: Vec<std::ffi::OsString> = vec![
        "--trust".into(),
        trust.into(),
        "--vault".into(),
        vault.into(),
        "--bins".into(),
        bins.into(),
        "--signing-key".into(),
        signing_key.into(),
        "--signing-cert".into(),
        TEST_SIGNING_CERT.into(),
    ];
    let started = Instant::now();
    run(Command::new(build_script())
        .args(&stick_build)
        .arg("--out")
        .arg(&stick)
        .arg("--serial"));
    eprintln!(
        "stick: built in {:.1} s, {} MiB",
        started.elapsed().as_secs_f64(),
        file_size(&stick) >> 20
    );
    Ok(Fixture {
        bios_disk: root.join("bios.img"),
        uefi_disk: root.join("uefi.img"),
        _dir: dir,
        stick,
        stick_build,
        vga_stick: OnceLock::new(),
        bios_marker,
        uefi_marker,
    })
}

#[derive(Debug)]
enum Firmware {
    Bios,
    /// OVMF with its own copy of the variable store, Secure Boot off.
    Uefi {
        vars: PathBuf,
    },
    /// OVMF enforcing Secure Boot with the keys of the variable store
    /// copied from `OVMF_VARS_TEST_KEY` or `OVMF_VARS_MICROSOFT`.
    SecureBoot {
        vars: PathBuf,
    },
}

impl Firmware {
    fn uefi(dir: &Path) -> Firmware {
        Firmware::Uefi {
            vars: copy_vars(dir, OVMF_VARS),
        }
    }

    fn secure_boot(dir: &Path, template: &str) -> Firmware {
        Firmware::SecureBoot {
            vars: copy_vars(dir, template),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Firmware::Bios => "SeaBIOS",
            Firmware::Uefi { .. } => "OVMF",
            Firmware::SecureBoot { .. } => "OVMF Secure Boot",
        }
    }

    fn args(&self) -> Vec<String> {
        let pflash = |code: &str, vars: &Path| {
            vec![
                "-drive".to_string(),
                format!("if=pflash,format=raw,readonly=on,file={code}"),
                "-drive".into(),
                format!("if=pflash,format=raw,file={}", vars.display()),
            ]
        };
        match self {
            Firmware::Bios => vec!["-machine".into(), "q35".into()],
            Firmware::Uefi { vars } => {
                let mut args = vec!["-machine".into(), "q35".into()];
                args.extend(pflash(OVMF_CODE, vars));
                args
            }
            // Secure Boot's variables are only protected with SMM on.
            Firmware::SecureBoot { vars } => {
                let mut args: Vec<String> = vec![
                    "-machine".into(),
                    "q35,smm=on".into(),
                    "-global".into(),
                    "driver=cfi.pflash01,property=secure,value=on".into(),
                ];
                args.extend(pflash(OVMF_CODE_SECURE_BOOT, vars));
                args
            }
        }
    }
}

fn copy_vars(dir: &Path, template: &str) -> PathBuf {
    let vars = dir.join(format!("ovmf-vars-{}.fd", unique_suffix()));
    std::fs::copy(template, &vars).expect("copy the OVMF variable store");
    vars
}

/// Where a second USB disk sits on the bus relative to the stick, and so
/// in the firmware's and GRUB's enumeration.
#[derive(Debug, Clone, Copy)]
enum DiskOrder {
    BeforeStick,
    AfterStick,
}

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-stick")
}

/// QEMU's human monitor on a Unix socket: the guest's keyboard and screen.
struct Monitor {
    stream: std::os::unix::net::UnixStream,
}

impl Monitor {
    fn connect(socket: &Path) -> Monitor {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match std::os::unix::net::UnixStream::connect(socket) {
                Ok(stream) => return Monitor { stream },
                Err(e) if Instant::now() > until => {
                    panic!("cannot connect to QEMU's monitor {}: {e}", socket.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Sends one command; the monitor's replies are not needed.
    fn command(&self, line: &str) {
        (&self.stream)
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to QEMU's monitor");
        std::thread::sleep(Duration::from_millis(150));
    }

    /// The screen as text: a screendump (PPM), each character cell made
    /// black on white whatever its colours (the UI's fields are inverted),
    /// scaled up twice, through tesseract. `None` until the guest has a
    /// screen.
    fn read_screen(&self, dir: &Path) -> Option<String> {
        let ppm = dir.join(format!("screen-{}.ppm", unique_suffix()));
        self.command(&format!("screendump {}", ppm.display()));
        let until = Instant::now() + Duration::from_secs(30);
        let image = loop {
            if let Some(image) = std::fs::read(&ppm).ok().and_then(|b| Ppm::parse(&b)) {
                break image;
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let pgm = dir.join("screen.pgm");
        std::fs::write(&pgm, image.cells_black_on_white()).expect("write the PGM");
        let out = Command::new("tesseract")
            .arg(&pgm)
            .arg("-")
            .output()
            .expect("runs tesseract");
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Reads the screen until it shows `needle`; returns that screen.
    fn wait_for_text(&self, needle: &str, timeout: Duration, dir: &Path) -> String {
        let until = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < until {
            if let Some(screen) = self.read_screen(dir) {
                if screen.contains(needle) {
                    return screen;
                }
                last = screen;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        panic!(
            "no {needle:?} on the VGA screen within {} s; last read:\n{last}",
            timeout.as_secs()
        );
    }
}

/// A binary PPM (P6, maxval 255) as QEMU's screendump writes it.
struct Ppm {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Ppm {
    /// `None` for anything else, including a file still being written.
    fn parse(bytes: &[u8]) -> Option<Ppm> {
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while bytes.get(at)?.is_ascii_whitespace() {
                at += 1;
            }
            let start = at;
            while !bytes.get(at)?.is_ascii_whitespace() {
                at += 1;
            }
            fields.push(std::str::from_utf8(&bytes[start..at]).ok()?);
        }
        let (width, height) = (fields[1].parse().ok()?, fields[2].parse().ok()?);
        if fields[0] != "P6" || fields[3] != "255" {
            return None;
        }
        let rgb = bytes.get(at + 1..)?;
        (rgb.len() == width * height * 3).then(|| Ppm {
            width,
            height,
            rgb: rgb.to_vec(),
        })
    }

    /// A PGM twice the size in which every pixel that differs from its
    /// character cell's most common colour is black, the rest white. Cells
    /// are 9x16 in VGA text mode (720 pixels wide), 8x16 on a framebuffer.
    fn cells_black_on_white(&self) -> Vec<u8> {
        let cell_width = if self.width == 720 { 9 } else { 8 };
        let pixel = |x: usize, y: usize| {
            let at = (y * self.width + x) * 3;
            &self.rgb[at..at + 3]
        };
        let mut ink = vec![false; self.width * self.height];
        for top in (0..self.height).step_by(16) {
            for left in (0..self.width).step_by(cell_width) {
                let xs = left..(left + cell_width).min(self.width);
                let ys = top..(top + 16).min(self.height);
                let mut counts: Vec<(&[u8], usize)> = Vec::new();
                for y in ys.clone() {
                    for x in xs.clone() {
                        match counts.iter_mut().find(|(c, _)| *c == pixel(x, y)) {
                            Some((_, n)) => *n += 1,
                            None => counts.push((pixel(x, y), 1)),
                        }
                    }
                }
                let background = counts.iter().max_by_key(|(_, n)| *n).map(|(c, _)| *c);
                for y in ys.clone() {
                    for x in xs.clone() {
                        ink[y * self.width + x] = Some(pixel(x, y)) != background;
                    }
                }
            }
        }
        let (width, height) = (self.width * 2, self.height * 2);
        let mut pgm = format!("P5\n{width} {height}\n255\n").into_bytes();
        for y in 0..height {
            for x in 0..width {
                pgm.push(if ink[(y / 2) * self.width + x / 2] {
                    0
                } else {
                    255
                });
            }
        }
        pgm
    }
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A QEMU guest whose first serial port is this process's pipe; what it
/// prints is kept raw and fed to a VT100 screen of 80x25.
struct Qemu {
    child: Child,
    stdin: ChildStdin,
    raw: Arc<Mutex<Vec<u8>>>,
    screen: Arc<Mutex<vt100::Parser>>,
    started: Instant,
}

impl Qemu {
    /// The stick as a USB disk (first boot device) and `targets` as virtio
    /// disks with the given serial numbers, in order (vda, vdb, ...).
    fn start(firmware: &Firmware, stick: &Path, targets: &[(&Path, &str)]) -> Qemu {
        Self::start_with(firmware, stick, targets, None)
    }

    /// [`Qemu::start`] with another USB disk, not a boot device, before or
    /// after the stick.
    fn start_with(
        firmware: &Firmware,
        stick: &Path,
        targets: &[(&Path, &str)],
        other: Option<(&Path, DiskOrder)>,
    ) -> Qemu {
        let args = Self::stick_drives(stick, targets, other);
        Self::spawn(firmware, &args, 1024, None)
    }

    /// QEMU's arguments for the stick, `targets` and the `other` USB disk.
    fn stick_drives(
        stick: &Path,
        targets: &[(&Path, &str)],
        other: Option<(&Path, DiskOrder)>,
    ) -> Vec<String> {
        let mut args = vec![
            "-drive".to_string(),
            format!("file={},format=raw,if=none,id=stick", stick.display()),
            "-device".into(),
            "qemu-xhci".into(),
        ];
        let other_usb = other.map(|(disk, order)| {
            args.push("-drive".into());
            args.push(format!(
                "file={},format=raw,if=none,id=other",
                disk.display()
            ));
            (
                vec!["-device".to_string(), "usb-storage,drive=other".into()],
                order,
            )
        });
        if let Some((device, DiskOrder::BeforeStick)) = &other_usb {
            args.extend(device.iter().cloned());
        }
        args.push("-device".into());
        args.push("usb-storage,drive=stick,bootindex=0".into());
        if let Some((device, DiskOrder::AfterStick)) = &other_usb {
            args.extend(device.iter().cloned());
        }
        for (n, (disk, serial)) in targets.iter().enumerate() {
            args.push("-drive".into());
            args.push(format!(
                "file={},format=raw,if=none,id=target{n}",
                disk.display()
            ));
            args.push("-device".into());
            args.push(format!("virtio-blk-pci,drive=target{n},serial={serial}"));
        }
        args
    }

    /// [`Qemu::start_with`], and QEMU's monitor on the socket `monitor`,
    /// which [`Monitor`] uses to type on the guest's keyboard and to read
    /// its screen.
    fn start_with_monitor(
        firmware: &Firmware,
        stick: &Path,
        targets: &[(&Path, &str)],
        other: (&Path, DiskOrder),
        monitor: &Path,
    ) -> Qemu {
        let args = Self::stick_drives(stick, targets, Some(other));
        Self::spawn(firmware, &args, 1024, Some(monitor))
    }

    fn start_target(firmware: &Firmware, disk: &Path) -> Qemu {
        let args = vec![
            "-drive".to_string(),
            format!("file={},format=raw,if=none,id=target", disk.display()),
            "-device".into(),
            "virtio-blk-pci,drive=target,bootindex=0".into(),
        ];
        Self::spawn(firmware, &args, 256, None)
    }

    fn spawn(
        firmware: &Firmware,
        drives: &[String],
        memory_mib: u32,
        monitor: Option<&Path>,
    ) -> Qemu {
        let monitor = monitor.map_or("none".to_string(), |path| {
            format!("unix:{},server=on,wait=off", path.display())
        });
        let mut child = Command::new("qemu-system-x86_64")
            .arg("-m")
            .arg(memory_mib.to_string())
            .args(["-smp", "2", "-display", "none", "-monitor", &monitor])
            .args(["-nic", "none", "-no-reboot"])
            .args(["-chardev", "stdio,id=console,signal=off"])
            .args(["-serial", "chardev:console"])
            .args(firmware.args())
            .args(drives)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start qemu-system-x86_64: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let raw = Arc::new(Mutex::new(Vec::new()));
        let screen = Arc::new(Mutex::new(vt100::Parser::new(25, 80, 0)));
        let (raw_in, screen_in) = (Arc::clone(&raw), Arc::clone(&screen));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                raw_in.lock().expect("raw").extend_from_slice(&buf[..n]);
                screen_in.lock().expect("screen").process(&buf[..n]);
            }
        });
        Qemu {
            child,
            stdin,
            raw,
            screen,
            started: Instant::now(),
        }
    }

    /// Sends one key: a character, or an escape sequence written whole so
    /// the UI does not read a lone Esc.
    fn send(&mut self, key: &[u8]) {
        self.stdin
            .write_all(key)
            .expect("write to the serial console");
        self.stdin.flush().expect("flush the serial console");
        std::thread::sleep(Duration::from_millis(150));
    }

    fn type_text(&mut self, text: &str) {
        for c in text.bytes() {
            self.send(&[c]);
        }
    }

    fn screen(&self) -> String {
        self.screen.lock().expect("screen").screen().contents()
    }

    fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw.lock().expect("raw")).into_owned()
    }

    /// Waits until the screen shows `needle`; returns the screen.
    fn wait_screen(&self, needle: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < until,
                "no {needle:?} on the screen within {} s; screen:\n{}\nserial tail:\n{}",
                timeout.as_secs(),
                self.screen(),
                tail(&self.raw_text(), 3000)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the raw serial output holds `needle`; returns all of it.
    fn wait_raw(&self, needle: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            let text = self.raw_text();
            if text.contains(needle) {
                // Let the rest of the message arrive.
                std::thread::sleep(Duration::from_secs(1));
                return self.raw_text();
            }
            assert!(
                Instant::now() < until,
                "no {needle:?} on the serial console within {} s:\n{}",
                timeout.as_secs(),
                tail(&text, 3000)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Moves the list's cursor (`▸`) to the row that contains `text`.
    fn select_row(&mut self, text: &str) {
        for _ in 0..12 {
            self.send(b"\x1b[A");
        }
        for _ in 0..12 {
            std::thread::sleep(Duration::from_millis(700));
            let screen = self.screen();
            if screen
                .lines()
                .any(|line| is_selected(line) && line.contains(text))
            {
                return;
            }
            self.send(b"\x1b[B");
        }
        panic!("no row with {text:?}:\n{}", self.screen());
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str, chars: usize) -> String {
    let skip = text.chars().count().saturating_sub(chars);
    text.chars().skip(skip).collect()
}

fn blank_disk(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("create a target disk");
    file.set_len(TARGET_SIZE).expect("size the target disk");
    path
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open to write");
    file.write_all_at(bytes, offset).expect("write");
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open to flip a byte");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset)
        .expect("read the byte");
    byte[0] ^= 0x01;
    file.write_all_at(&byte, offset).expect("write the byte");
}

/// The partition table as `sfdisk --dump` reads it, without the lines that
/// name the file or depend on the disk's size (GPT's last usable LBA).
fn partition_table(disk: &Path) -> Vec<String> {
    let dump = run(Command::new("sfdisk").arg("--dump").arg(disk));
    let name = disk.display().to_string();
    dump.lines()
        .filter(|l| !l.starts_with("device:") && !l.starts_with("last-lba:"))
        .map(|l| l.replace(&name, "DISK"))
        .collect()
}

/// Start and length, in 512-byte sectors, of the GPT partition `name`.
fn partition_extent(disk: &Path, name: &str) -> (u64, u64) {
    let dump = run(Command::new("sfdisk").arg("--dump").arg(disk));
    let line = dump
        .lines()
        .find(|l| l.contains(&format!("name=\"{name}\"")))
        .unwrap_or_else(|| panic!("no partition {name} in:\n{dump}"));
    let field = |key: &str| -> u64 {
        let after = line.split(key).nth(1).unwrap_or("");
        after
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad {key} in {line:?}: {e}"))
    };
    (field("start="), field("size="))
}

fn extract_partition(disk: &Path, name: &str, dir: &Path) -> PathBuf {
    let (start, sectors) = partition_extent(disk, name);
    let out = dir.join(format!("{name}.part"));
    run(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", out.display()))
        .args(["bs=512", "status=none"])
        .arg(format!("skip={start}"))
        .arg(format!("count={sectors}")));
    out
}

/// Copies the audit log off the stick's audit partition, checks it with
/// `reliquary audit verify` and returns its records (`audit export`).
fn audit_records(stick: &Path, dir: &Path) -> Vec<serde_json::Value> {
    let part = extract_partition(stick, "reliquary-audit", dir);
    let copy = dir.join("audit-copy");
    std::fs::create_dir_all(&copy).expect("mkdir");
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump /log {}", copy.display()))
        .arg(&part));
    let log = copy.join("log");
    run(Command::new(reliquary_bin())
        .args(["audit", "verify", "--dir"])
        .arg(&log)
        .arg("--key")
        .arg(log.join("appliance.pub")));
    let jsonl = run(Command::new(reliquary_bin())
        .args(["audit", "export", "--format", "jsonl", "--dir"])
        .arg(&log));
    jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l}: {e}")))
        .collect()
}

/// `reliquary stick verify` of `stick` against the manifest of the built
/// stick `built` (`STICK.img.manifest`, written by the build).
fn stick_verify(stick: &Path, built: &Path) -> std::process::Output {
    let mut manifest = built.as_os_str().to_owned();
    manifest.push(".manifest");
    Command::new(reliquary_bin())
        .args(["stick", "verify"])
        .arg(stick)
        .arg("--manifest")
        .arg(manifest)
        .output()
        .expect("runs reliquary stick verify")
}

/// Runs a command that must succeed; returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

/// Whether a list row is the selected one: `▸` in Unicode, `>` on the
/// Linux console's CP437 font (the serial console runs with TERM=linux).
fn is_selected(line: &str) -> bool {
    line.contains('▸') || line.trim_start_matches('│').starts_with('>')
}
