#!/usr/bin/env bash
# Capture and verify throughput against the peers, in one run.
#
#   benches/capture_verify.sh [DIR]
#
# RUNS (default 3) repetitions of each timed command; the best is reported
# (the VM is shared, so the minimum is the least disturbed run).
# DIR (default target/bench-capture) receives a 2.5 GiB disk image and its
# captures; it needs about 8 GB free. Root is needed to drop the page cache
# between runs (otherwise reads are warm, and the report says so).
#
# The disk: an MBR with a small active "System Reserved" ext4 partition and a
# 2.25 GiB ext4 partition filled (mkfs.ext4 -d, no mount) with about 1.5 GiB
# of real files copied from /usr, the rest free (zero) space.
#
# Measured, each from a cold page cache:
#   capture: `reliquary capture` (release) vs `zstd -T0 -3` of the same file
#   verify:  `reliquary verify` vs `sha256sum` and a raw read of the image
#   limit:   max(read time of the stored bytes,
#                (zstd -d of the stored chunks + sha256 of the data bytes,
#                 CPU seconds) / cores)
# Peak RSS from /usr/bin/time -v. A markdown table goes to DIR/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${1:-$root/target/bench-capture}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
disk=$dir/disk.raw
cores=$(nproc)
runs=${RUNS:-3}

for tool in sfdisk mkfs.ext4 zstd sha256sum /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install fdisk e2fsprogs zstd time)" >&2; exit 1; }
done

echo "== building (release)"
cargo build --release -q -p reliquary-appliance
bin=$root/target/release/reliquary

drop_caches() {
  sync
  if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then cold=cold; else cold="warm (cannot drop caches)"; fi
}

# Runs a command under /usr/bin/time -v; sets $secs (wall), $cpu (user+sys), $rss (MiB).
timed() {
  local log=$dir/time.log
  /usr/bin/time -v "$@" 2>"$log" >/dev/null || { cat "$log" >&2; exit 1; }
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$log")
  cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u+s}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$log")
}
# best [--cold] CMD...: the fastest of $runs runs of timed (from a cold
# page cache with --cold; CMD's output is discarded, except by `capture`
# which writes its image, so the image is removed before each run).
best() {
  local cold_run=0 b_secs= b_cpu= b_rss=0 i
  if [ "$1" = --cold ]; then cold_run=1; shift; fi
  for i in $(seq "$runs"); do
    rm -f "$dir/disk.rimg.partial" "$dir/out.tmp"
    [ -z "${BEST_CLEAN:-}" ] || rm -f "$BEST_CLEAN"
    [ "$cold_run" = 0 ] || drop_caches
    timed "$@"
    if [ -z "$b_secs" ] || awk -v a="$secs" -v b="$b_secs" 'BEGIN {exit !(a<b)}'; then b_secs=$secs b_cpu=$cpu; fi
    [ "$rss" -le "$b_rss" ] || b_rss=$rss
  done
  secs=$b_secs cpu=$b_cpu rss=$b_rss
}
mbs() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b/s/1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

if [ ! -f "$disk" ]; then
  echo "== building the disk image"
  stage=$dir/stage
  rm -rf "$stage" "$dir/p1.ext4" "$dir/p2.ext4"
  mkdir -p "$stage"
  cp -a /usr/share "$stage/share"
  cp -a /usr/bin "$stage/bin"
  # Libraries until about 1.5 GiB of files.
  for d in /usr/lib/x86_64-linux-gnu /usr/lib/python3* /usr/lib/gcc /usr/libexec; do
    [ -e "$d" ] || continue
    used=$(du -sm "$stage" | cut -f1)
    [ "$used" -lt 1500 ] || break
    mkdir -p "$stage/lib"
    cp -a "$d" "$stage/lib/" 2>/dev/null || true
  done
  truncate -s 100M "$dir/p1.ext4"
  mkfs.ext4 -q -F -L "System Reserved" "$dir/p1.ext4"
  truncate -s 2304M "$dir/p2.ext4"
  mkfs.ext4 -q -F -L Windows -d "$stage" "$dir/p2.ext4"
  truncate -s 2560M "$disk"
  printf 'label: dos\nlabel-id: 0x0b1ec7ed\nstart=2048, size=204800, type=83, bootable\nstart=206848, size=4718592, type=83\n' |
    sfdisk -q "$disk"
  dd if="$dir/p1.ext4" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$dir/p2.ext4" of="$disk" bs=1M seek=101 conv=notrunc,sparse status=none
  rm -rf "$stage" "$dir/p1.ext4" "$dir/p2.ext4"
fi
size=$(stat -c %s "$disk")
files_mb=$(du -sm "$disk" | cut -f1)
load=$(cut -d' ' -f1-3 /proc/loadavg)
if command -v openssl >/dev/null; then hasher="openssl dgst -sha256"; else hasher=sha256sum; fi

rm -f "$dir/key" "$dir/key.pub" "$dir/disk.rimg" "$dir/disk.raw.zst"
"$bin" keygen --out "$dir/key" --name Bench >/dev/null

echo "== capture"
BEST_CLEAN=$dir/disk.rimg best --cold "$bin" capture "$disk" -o "$dir/disk.rimg" --key "$dir/key" --name bench
cap_s=$secs cap_rss=$rss cap_cpu=$cpu
BEST_CLEAN=$dir/disk.raw.zst best --cold zstd -T0 -3 -q -f "$disk" -o "$dir/disk.raw.zst"
zst_s=$secs zst_rss=$rss zst_cpu=$cpu
stored=$(stat -c %s "$dir/disk.rimg")
zst_size=$(stat -c %s "$dir/disk.raw.zst")

echo "== verify"
best --cold "$bin" verify "$dir/disk.rimg" --trust "$dir/key.pub"
ver_s=$secs ver_rss=$rss ver_cpu=$cpu
best "$bin" verify "$dir/disk.rimg" --trust "$dir/key.pub"
verw_s=$secs
best --cold sha256sum "$dir/disk.rimg"
sha_s=$secs
best --cold cat "$dir/disk.rimg"
read_s=$secs

echo "== machine limit"
BENCH_IMAGE=$dir/disk.rimg BENCH_OUT=$dir cargo test --release -q -p reliquary-tests \
  --test image_bench_dump -- --ignored --nocapture 2>/dev/null | grep '^chunks' | tee "$dir/chunks.txt"
# Decompression alone (output discarded), then SHA-256 of the data bytes
# (the decompressed chunks plus the raw-stored ones), both from the page cache.
cat "$dir/chunks.zst" "$dir/chunks.raw" >/dev/null
best zstd -d -q -c "$dir/chunks.zst"
dec_cpu=$cpu
zstd -d -q -c "$dir/chunks.zst" >"$dir/chunks.dec"
cat "$dir/chunks.dec" "$dir/chunks.raw" >/dev/null
# shellcheck disable=SC2086
best $hasher "$dir/chunks.dec" "$dir/chunks.raw"
hash_cpu=$cpu
data_bytes=$(( $(stat -c %s "$dir/chunks.dec") + $(stat -c %s "$dir/chunks.raw") ))
rm -f "$dir/chunks.zst" "$dir/chunks.raw" "$dir/chunks.dec"
cpu_limit=$(awk -v d="$dec_cpu" -v h="$hash_cpu" -v c="$cores" 'BEGIN {printf "%.2f", (d+h)/c}')
limit_s=$(awk -v a="$read_s" -v b="$cpu_limit" 'BEGIN {print (a>b)?a:b}')

cap_vs_zstd=$(ratio "$zst_s" "$cap_s")
ver_vs_limit=$(ratio "$limit_s" "$ver_s")
{
  echo "Disk: $(awk -v b="$size" 'BEGIN {printf "%.2f", b/2^30}') GiB ($size bytes), ${files_mb} MiB allocated; image $(awk -v b="$stored" 'BEGIN {printf "%.0f", b/2^20}') MiB, zstd -3 file $(awk -v b="$zst_size" 'BEGIN {printf "%.0f", b/2^20}') MiB; $(cat "$dir/chunks.txt"); $cores cores; load average at start $load; page cache $cold; best of $runs runs."
  echo
  echo "| Run | Time | Throughput | CPU s | Peak RSS |"
  echo "|---|---:|---:|---:|---:|"
  echo "| \`reliquary capture\` (4 MiB chunks, zstd 3) | ${cap_s} s | $(mbs "$size" "$cap_s") MB/s of disk | ${cap_cpu} | ${cap_rss} MiB |"
  echo "| \`zstd -T0 -3\` of the same file | ${zst_s} s | $(mbs "$size" "$zst_s") MB/s of disk | ${zst_cpu} | ${zst_rss} MiB |"
  echo "| \`reliquary verify\` | ${ver_s} s | $(mbs "$stored" "$ver_s") MB/s of image, $(mbs "$size" "$ver_s") MB/s of disk | ${ver_cpu} | ${ver_rss} MiB |"
  echo "| \`reliquary verify\`, warm page cache | ${verw_s} s | $(mbs "$stored" "$verw_s") MB/s of image | | |"
  echo "| \`sha256sum\` of the image | ${sha_s} s | $(mbs "$stored" "$sha_s") MB/s | | |"
  echo "| raw read of the image (\`cat\`) | ${read_s} s | $(mbs "$stored" "$read_s") MB/s | | |"
  echo "| limit (a): read the stored bytes | ${read_s} s | | | |"
  echo "| limit (b): (\`zstd -d\` ${dec_cpu} s + \`$hasher\` of $(awk -v b="$data_bytes" 'BEGIN {printf "%.0f", b/1e6}') MB ${hash_cpu} s) / $cores cores | ${cpu_limit} s | | | |"
  echo
  echo "Capture vs zstd -T0 -3: **${cap_vs_zstd}×** the throughput (target ≥ 1)."
  echo "Verify vs the machine limit max(a, b) = ${limit_s} s: **$(awk -v r="$ver_vs_limit" 'BEGIN {printf "%.0f", r*100}') %** (target ≥ 90 %)."
} | tee "$dir/results.md"
