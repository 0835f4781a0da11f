#!/usr/bin/env bash
# File-system-aware capture (issue #11) against partclone + zstd, in one run.
#
#   benches/fs_capture.sh [DIR]
#
# As root (loop devices, ntfs-3g, dropping the page cache). SIZE (default
# 2G) sets the disk size, FILES_MB (default 600) the files copied from /usr,
# RUNS (default 1) the repetitions of each timed command (the best is kept).
# DIR (default target/bench-fs-capture) needs about 4 × SIZE free.
#
# The disk: an MBR, one NTFS partition from 1 MiB to the end (mkntfs -f),
# FILES_MB of real files copied in through ntfs-3g. Two variants:
#   clean: the free space is what mkntfs left (zero);
#   dirty: the free space was filled with random bytes through a file that
#          was then deleted, as on a master machine that has run for years.
# For each, from a cold page cache:
#   stored bytes and capture time: `reliquary capture` (release) against
#     `partclone.ntfs -c | zstd -3 -T0` of the partition (partclone stores
#     no bytes outside it: the 1 MiB before it is added to its size);
#   restore time onto a loop device, read-back off: `reliquary restore
#     --no-readback` against `zstd -dc | partclone.ntfs -r` onto the
#     partition and `zstd -dc | dd` of the whole disk (`zstd -3 -T0` image).
# Not throttled: the field profile (cgroup v1 blkio) is not applied here.
# A markdown table goes to DIR/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${1:-$root/target/bench-fs-capture}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
size=${SIZE:-2G}
files_mb=${FILES_MB:-600}
runs=${RUNS:-1}
target_dir=${CARGO_TARGET_DIR:-$root/target}

for tool in sfdisk partx mkntfs ntfs-3g partclone.ntfs zstd losetup /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install fdisk ntfs-3g partclone zstd time)" >&2; exit 1; }
done

echo "== building (release)"
cargo build --release -q -p reliquary-appliance
bin=$target_dir/release/reliquary

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
# timed CMD...: sets $secs (wall) and $rss (MiB) of a shell command line.
timed() {
  local log=$dir/time.log
  /usr/bin/time -v bash -c "$1" 2>"$log" >/dev/null || { cat "$log" >&2; exit 1; }
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$log")
}
# best "PREP" "CMD": the fastest of $runs runs of CMD, each after PREP and
# from a cold page cache.
best() {
  local b= r=0 i
  for i in $(seq "$runs"); do
    bash -c "$1"
    drop_caches
    timed "$2"
    if [ -z "$b" ] || awk -v a="$secs" -v b="$b" 'BEGIN {exit !(a<b)}'; then b=$secs; fi
    [ "$rss" -le "$r" ] || r=$rss
  done
  secs=$b rss=$r
}
mib() { awk -v b="$1" 'BEGIN {printf "%.0f", b/1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

attach() { # FILE -> prints the loop device; its partition 1 is ${dev}p1
  local dev
  dev=$(losetup -f --show "$1")
  # -u: an earlier user's partitions outlive its detach, with its sizes.
  partx -u "$dev" 2>/dev/null || true
  for _ in $(seq 50); do [ -e "${dev}p1" ] && break; sleep 0.1; done
  echo "$dev"
}

build_disk() { # VARIANT
  local raw=$dir/$1.raw dev mnt=$dir/mnt
  [ -f "$raw" ] && return
  echo "== building the $1 disk ($size)"
  truncate -s "$size" "$raw.tmp"
  printf 'label: dos\nstart=2048, type=7, bootable\n' | sfdisk -q "$raw.tmp"
  dev=$(attach "$raw.tmp")
  mkntfs -q -F -f "${dev}p1" >/dev/null
  mkdir -p "$mnt"
  ntfs-3g "${dev}p1" "$mnt"
  if [ "$1" = dirty ]; then
    # Stale data everywhere first, then the files over it.
    dd if=/dev/urandom of="$mnt/filler" bs=4M status=none 2>/dev/null || true
    rm -f "$mnt/filler"
  fi
  mkdir -p "$mnt/files"
  for d in /usr/share /usr/bin /usr/lib/x86_64-linux-gnu /usr/lib/python3* /usr/lib/gcc; do
    [ -e "$d" ] || continue
    [ "$(du -sm "$mnt/files" | cut -f1)" -lt "$files_mb" ] || break
    cp -a "$d" "$mnt/files/" 2>/dev/null || true
  done
  umount "$mnt"
  losetup -d "$dev"
  mv "$raw.tmp" "$raw"
}

"$bin" keygen --out "$dir/key" --name Bench >/dev/null 2>&1 || true
out=$dir/results.md
{
  echo "| Disk | Used (NTFS) | reliquary stored | partclone+zstd stored (+1 MiB) | ratio | reliquary capture | partclone+zstd capture | reliquary restore | partclone restore | dd restore |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$out"

for variant in clean dirty; do
  build_disk "$variant"
  raw=$dir/$variant.raw
  src=$(attach "$raw")
  used=$(ntfsinfo -m "${src}p1" 2>/dev/null | awk '/Cluster Size/ {c=$3} /Free Clusters/ {f=$3} /Volume Size in Clusters/ {t=$5} END {if (c && t) printf "%d", (t-f)*c}')

  best "rm -f '$dir/$variant.rimg'" \
    "'$bin' capture '$raw' -o '$dir/$variant.rimg' --key '$dir/key' --name bench"
  cap_s=$secs cap_rss=$rss
  stored=$(stat -c %s "$dir/$variant.rimg")
  best "rm -f '$dir/$variant.pc.zst'" \
    "partclone.ntfs -q -c -s '${src}p1' -o - 2>/dev/null | zstd -3 -T0 -q -o '$dir/$variant.pc.zst'"
  pc_s=$secs
  pc_stored=$(( $(stat -c %s "$dir/$variant.pc.zst") + 1048576 ))
  zstd -3 -T0 -q -f "$raw" -o "$dir/$variant.raw.zst"
  losetup -d "$src"

  truncate -s "$size" "$dir/target.raw"
  tgt=$(losetup -f --show "$dir/target.raw")
  best "" "'$bin' restore '$dir/$variant.rimg' '$tgt' --trust '$dir/key.pub' --no-audit --yes --no-readback"
  res_s=$secs
  best "" "zstd -dc '$dir/$variant.raw.zst' | dd of='$tgt' bs=4M oflag=direct iflag=fullblock status=none"
  dd_s=$secs
  partx -u "$tgt" 2>/dev/null || true
  best "" "zstd -dc '$dir/$variant.pc.zst' | partclone.ntfs -q -r -s - -o '${tgt}p1' 2>/dev/null"
  pcr_s=$secs
  losetup -d "$tgt"
  rm -f "$dir/target.raw"

  echo "| $variant $size | $(mib "${used:-0}") MiB | $(mib "$stored") MiB | $(mib "$pc_stored") MiB | $(ratio "$stored" "$pc_stored") | ${cap_s} s (${cap_rss} MiB RSS) | ${pc_s} s | ${res_s} s | ${pcr_s} s | ${dd_s} s |" >>"$out"
done
cat "$out"
