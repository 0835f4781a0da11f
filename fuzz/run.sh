#!/bin/sh
# Builds every fuzz target and runs each for N seconds (default 20):
#   fuzz/run.sh [SECONDS]
# Needs the nightly toolchain and cargo-fuzz (installed here if missing).
# Corpora start from the golden image (tests/golden/golden.rimg) and its
# sections, so the fuzzer starts deep in the format. A crash stops the run
# with a non-zero exit; the input is in fuzz/artifacts/TARGET/ and
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…` replays it.
set -eu
cd "$(dirname "$0")"
secs=${1:-20}
golden=../image-format/tests/golden/golden.rimg

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo +nightly fuzz build

# u64 little-endian at byte $1 of the golden image's preamble.
word() { od -An -t u8 -j "$1" -N 8 "$golden" | tr -d ' '; }
section() { # name offset-field
  mkdir -p "corpus/$1"
  dd if="$golden" of="corpus/$1/golden" bs=1 skip="$(word "$2")" count="$(word $(($2 + 8)))" 2>/dev/null
}
mkdir -p corpus/preamble corpus/chunk
cp "$golden" corpus/preamble/golden
section index 48
section manifest 64
# chunk: one byte giving the raw length ((b + 1) * 4096), then a zstd frame.
if command -v zstd >/dev/null 2>&1; then
  { printf '\001'; yes "setpoint 42; valve open" | head -c 8192 | zstd -q -c -3; } > corpus/chunk/text
fi

# The appliance's parsers start from real inputs of this machine and the
# committed audit-log fixtures.
mkdir -p corpus/audit_log corpus/checkpoint corpus/mountinfo corpus/partition_table
cp ../tests/fixtures/audit/golden/audit.log corpus/audit_log/golden
cp ../tests/fixtures/audit/golden/checkpoint corpus/checkpoint/golden
cp /proc/self/mountinfo corpus/mountinfo/self
if command -v sfdisk >/dev/null 2>&1 && [ ! -f corpus/partition_table/mbr ]; then
  truncate -s 2M corpus/partition_table/mbr
  printf 'label: dos\nstart=2048, size=1024, type=7, bootable\nstart=3072, type=7\n' |
    sfdisk -q corpus/partition_table/mbr >/dev/null
fi
if command -v sgdisk >/dev/null 2>&1 && [ ! -f corpus/partition_table/gpt ]; then
  truncate -s 2M corpus/partition_table/gpt
  sgdisk -q -n 1:2048:+256K -c 1:EFI -n 2:0:0 -c 2:Windows corpus/partition_table/gpt >/dev/null
fi

# The file-system parsers start from small real file systems.
mkdir -p corpus/ext_bitmaps corpus/fat_table corpus/ntfs_bitmap corpus/sector_size \
  corpus/ntfs_records corpus/fat_chains corpus/ext_inodes
if command -v mkntfs >/dev/null 2>&1 && [ ! -f corpus/ntfs_bitmap/ntfs ]; then
  truncate -s 2M corpus/ntfs_bitmap/ntfs
  mkntfs -q -F -f corpus/ntfs_bitmap/ntfs >/dev/null 2>&1
fi
# A volume on which the ntfs crate panics (capture must catch it): every run
# starts by going through that fallback.
if command -v zstd >/dev/null 2>&1; then
  zstd -q -d -f ../appliance/src/fsmap/fixtures/ntfs_index_record_add_overflow.zst \
    -o corpus/ntfs_bitmap/index_record_add_overflow
fi
# Each seed fits in the targets' -max_len of 3 MiB (below): libFuzzer cuts a longer
# one, and a cut volume fails the size check before any bitmap is read.
if command -v mkfs.ext4 >/dev/null 2>&1 && [ ! -f corpus/ext_bitmaps/ext4-uninit ]; then
  rm -f corpus/ext_bitmaps/ext4
  # metadata_csum with 64-bit descriptors; and uninit_bg with 32-byte
  # descriptors over several groups.
  truncate -s 256K corpus/ext_bitmaps/ext4-csum
  mkfs.ext4 -q -F corpus/ext_bitmaps/ext4-csum >/dev/null 2>&1
  truncate -s 1M corpus/ext_bitmaps/ext4-uninit
  mkfs.ext4 -q -F -O ^64bit,^metadata_csum,uninit_bg -b 1024 -g 1024 \
    corpus/ext_bitmaps/ext4-uninit >/dev/null 2>&1
fi
if command -v mkfs.fat >/dev/null 2>&1; then
  for bits in 12 16 32; do
    [ -f "corpus/fat_table/fat$bits-small" ] && continue
    rm -f "corpus/fat_table/fat$bits"
    case $bits in 12) size=512 ;; 16) size=2200 ;; *) size=900 ;; esac
    mkfs.fat -C -F "$bits" -s 1 "corpus/fat_table/fat$bits-small" "$size" >/dev/null 2>&1
  done
fi
# The walkers start from the same volumes: an NTFS one whose MFT records
# lie at 1 KiB steps, the FATs of the FAT seeds, and an ext4 of 1 KiB
# blocks holding files (mkfs.ext4 -d), whose inodes lie at 256-byte steps.
[ -f corpus/ntfs_bitmap/ntfs ] && cp corpus/ntfs_bitmap/ntfs corpus/ntfs_records/ntfs
for seed in corpus/fat_table/fat*-small; do
  [ -f "$seed" ] || continue
  # A kind byte, then the FAT (after one reserved sector on FAT12/16, 32 on FAT32).
  case $seed in *fat12*) kind='\000' skip=1 ;; *fat16*) kind='\001' skip=1 ;; *) kind='\002' skip=32 ;; esac
  { printf "$kind"; dd if="$seed" bs=512 skip="$skip" count=64 2>/dev/null; } >"corpus/fat_chains/${seed##*/}"
done
if command -v mkfs.ext4 >/dev/null 2>&1 && [ ! -f corpus/ext_inodes/ext4-files ]; then
  files=$(mktemp -d)
  mkdir -p "$files/dir"
  head -c 300000 /dev/urandom >"$files/dir/big"
  echo "setpoint 42" >"$files/small"
  ln -s dir/big "$files/link"
  truncate -s 1M corpus/ext_inodes/ext4-files
  mkfs.ext4 -q -F -b 1024 -d "$files" corpus/ext_inodes/ext4-files >/dev/null 2>&1
  rm -r "$files"
fi
for table in mbr gpt; do
  [ -f "corpus/partition_table/$table" ] && head -c 8192 "corpus/partition_table/$table" >"corpus/sector_size/$table"
done

# stick_verify: a 2 MiB GPT disk laid out as fuzzing::stick_verify's
# manifest says, with a verity superblock and the audit ext4 in place.
mkdir -p corpus/stick_verify
if command -v sgdisk >/dev/null 2>&1 && command -v veritysetup >/dev/null 2>&1 &&
  [ ! -f corpus/stick_verify/stick ]; then
  seed=corpus/stick_verify/stick
  truncate -s 2M "$seed"
  sgdisk -n 1:2048:2559 -c 1:reliquary-verity -n 2:2560:4062 -c 2:reliquary-audit "$seed" >/dev/null 2>&1
  truncate -s 64K logs-verity-data && veritysetup format logs-verity-data logs-verity-hash >/dev/null
  dd if=logs-verity-hash of="$seed" bs=512 seek=2048 conv=notrunc status=none
  truncate -s $((1503 * 512)) logs-audit && mkfs.ext4 -q -F -b 1024 -L reliquary-audit \
    -U 52454c51-4155-4449-5400-000000000001 logs-audit >/dev/null 2>&1
  dd if=logs-audit of="$seed" bs=512 seek=2560 conv=notrunc status=none
  rm -f logs-verity-data logs-verity-hash logs-audit
fi

# trust_store: a key file, NUL, a policy, NUL, an operators list.
mkdir -p corpus/trust_store
if [ ! -f corpus/trust_store/store ]; then
  {
    tr -d '\n' < ../tests/fixtures/audit/golden/appliance.pub
    printf '\000threshold 2\nrevoke-key 0123456789abcdef\nrevoke-image 6f1c1b0e-8d8a-4a43-9d0c-6f5b8f3f9a10\n'
    printf '\000op7 Alice Jones\n'
  } > corpus/trust_store/store
fi

# operators: a supervisor and a technician as `operators add` writes them.
mkdir -p corpus/operators
if [ ! -f corpus/operators/two ]; then
  {
    printf 'op7 $argon2id$v=19$m=19456,t=2,p=1$PteIpv8l0AHMTkyjDM32/w$dYKDT5fvm+0Lb58ZkdxLYppGBinr8vIDu1Ptj/psjsA Alice Jones\n'
    printf 'qa2 $argon2id$v=19$m=19456,t=2,p=1$NseYSIs0ZSVJrfa7BRE7LQ$9yZrqkfx9qeHWS55PaW/fzMRMXqodwTum7QNRJ8FHyA role=supervisor Q. Adams # QA\n'
  } > corpus/operators/two
fi

# ntfs_bitmap: the ntfs crate (0.4) panics on hostile volumes (unreachable!()
# on short reads, arithmetic overflow), which capture catches and turns into
# "keep every sector". The target replaces libFuzzer's abort-on-any-panic
# hook and fails only on a panic that escapes capture's NTFS entry point.
mkdir -p logs
# index, trust_store and operators run under the memory target of every command
# (RELIABILITY.md): 256 MiB of RSS whatever the input claims.
for target in preamble manifest index chunk audit_log checkpoint mountinfo partition_table \
  trust_store operators ext_bitmaps fat_table ntfs_bitmap sector_size stick_verify ntfs_records \
  fat_chains ext_inodes; do
  echo "== fuzz $target for ${secs}s"
  case $target in
    index | trust_store | operators) rss=256 malloc=256 ;;
    *) rss=2048 malloc=512 ;;
  esac
  if ! cargo +nightly fuzz run "$target" "corpus/$target" -- -max_len=3145728 \
    -max_total_time="$secs" -malloc_limit_mb="$malloc" -rss_limit_mb="$rss" -timeout=10 -print_final_stats=1 \
    >"logs/$target.log" 2>&1; then
    tail -n 60 "logs/$target.log"
    echo "fuzz target $target FAILED; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "logs/$target.log" || true
done
