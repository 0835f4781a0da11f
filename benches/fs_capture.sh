#!/usr/bin/env bash
# File-system-aware capture (issue #11) against partclone + zstd and
# zstd | dd, in one run. Results: BENCHMARKS.md (current figures) and
# benches/HISTORY.md, section "Used-cluster capture (issue #11)".
#
#   benches/fs_capture.sh [DIR]
#
# As root (loop devices, ntfs-3g, cgroup v1 blkio, dropping the page cache).
#   SIZE=8G          the benchmark disk
#   FILES_MB=3300    MiB of real files copied from /usr (whole directories,
#                    repeated if /usr is too small)
#   SCALE_SIZE=64G   the scale disks, with the same files (empty: skipped)
#   VARIANTS="clean dirty"
#   RUNS=1           rounds of every timed command, interleaved (the
#                    tables give the median and the range)
#   NICE=0           nice level of every timed command, peers included
#                    (e.g. -10 on a machine shared with other builds)
#   KEEP=            1: keep the built disks in DIR for the next run, which
#                    then skips building them
# DIR (default target/bench-fs-capture) holds at most about 2.2 × SIZE of
# allocated bytes at a time: each disk's artefacts are deleted when done
# (with KEEP=1, add the disks: about 3.6 GB for each clean one, SIZE for
# the dirty one).
#
# The disk, Windows-7-like: an MBR, a 100 MiB active "System Reserved" NTFS
# partition and an NTFS partition over the rest holding FILES_MB of real
# files copied in through ntfs-3g. Two variants:
#   clean: the free space is what mkntfs left (zero);
#   dirty: the same disk, then the free space of both volumes filled with
#          random bytes through a file that was then deleted, as on a
#          master machine that has run for years.
# For each variant, every timed command from a cold page cache:
#   capture, unthrottled, from the source loop device onto the "stick" (an
#     ext4 file system on its own loop device): `reliquary capture` against
#     partclone.ntfs -c | zstd -3 -T0 of each partition plus zstd of the
#     sectors outside them, and zstd -3 -T0 of the whole disk (for dd);
#     the peers end with an fsync of their files, as reliquary does;
#   restore onto a loop device, from the images on the stick, in the field
#     profile (benches/lib/throttle.sh: stick reads 200 MB/s, target 450
#     MB/s) and unthrottled: `reliquary restore` with and without read-back,
#     zstd -dc | partclone.ntfs -r (after the sectors outside the
#     partitions), and zstd -dc | dd of the whole disk.
# Scale: the clean SIZE disk against two SCALE_SIZE disks with the same
# files, captured and restored (read-back on and off) unthrottled; peak RSS:
#   SCALE_SIZE: built the same way, so ntfs-3g lays the files out over the
#     bigger volume as it sees fit;
#   SCALE_SIZE-grown: the clean SIZE disk with its second partition and
#     NTFS volume grown to SCALE_SIZE (ntfsresize), so every file keeps its
#     clusters and only the size differs.
# Raw measurements go to DIR/results.tsv, the tables to DIR/results.md, each
# timed command's output to DIR/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${1:-$root/target/bench-fs-capture}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
size=${SIZE:-8G}
files_mb=${FILES_MB:-3300}
scale_size=${SCALE_SIZE-64G}
variants=${VARIANTS:-clean dirty}
runs=${RUNS:-1}
nice_level=${NICE:-0}
keep=${KEEP:-}
target_dir=${CARGO_TARGET_DIR:-$root/target}
# shellcheck source=benches/lib/throttle.sh
. benches/lib/throttle.sh

[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
for tool in sfdisk partx mkntfs ntfs-3g ntfsinfo ntfsresize ntfsfix partclone.ntfs zstd losetup mkfs.ext4 blkdiscard python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install fdisk ntfs-3g partclone zstd e2fsprogs util-linux python3 time)" >&2; exit 1; }
done
log() { echo "[$(date +%T)] $*" >&2; }

log "building (release)"
cargo build --release -q -p reliquary-appliance
bin=$target_dir/release/reliquary

# Loop devices and mounts of this run, released on exit (and only those:
# a freed loop device number may be someone else's a moment later).
declare -A loops=() mnts=()
cleanup() {
  set +e
  throttle_release
  for m in "${!mnts[@]}"; do mountpoint -q "$m" && umount "$m"; done
  for l in "${!loops[@]}"; do losetup -d "$l" 2>/dev/null; done
}
trap cleanup EXIT
new_loop() { # FILE -> sets $loop (direct I/O)
  loop=$(losetup -f --show --direct-io=on "$1")
  loops[$loop]=1
}
free_loop() { partx -d "$1" 2>/dev/null || true; losetup -d "$1"; unset "loops[$1]"; }

attach() { # FILE -> sets $dev: its loop device (direct I/O) with partition nodes
  new_loop "$1"
  dev=$loop
  # -u first: an earlier user's partitions outlive its detach, with its sizes.
  partx -u "$dev" 2>/dev/null || true
  partx -a "$dev" 2>/dev/null || true
  for _ in $(seq 50); do [ -e "${dev}p2" ] && break; sleep 0.1; done
  [ -e "${dev}p2" ] || { echo "no partition nodes on $dev" >&2; exit 1; }
}

# ntfs_mount DEV MNT / ntfs_umount DEV MNT: unmount waits for the ntfs-3g
# daemon to exit, so the volume is marked clean before anyone reads it.
ntfs_mount() { mkdir -p "$2"; ntfs-3g "$1" "$2"; mnts[$2]=1; }
ntfs_umount() {
  umount "$2"
  unset "mnts[$2]"
  for _ in $(seq 300); do pgrep -f "ntfs-3g $1 " >/dev/null || return 0; sleep 0.1; done
  echo "ntfs-3g on $1 did not exit" >&2; exit 1
}

file_dirs=(/usr/bin /usr/include /usr/share /usr/lib/x86_64-linux-gnu /usr/lib/jvm
  /usr/lib/llvm-14 /usr/lib/modules /usr/lib/gcc /usr/lib/python3.11 /usr/lib/python3
  /usr/lib/postgresql /usr/lib/google-cloud-sdk /usr/libexec /usr/local)

build_disk() { # SIZE OUT: the clean Windows-7-like disk
  local raw=$2 dev mnt=$dir/mnt copied=0 round=0 d mb
  [ -f "$raw" ] && return
  log "building the clean $1 disk ($files_mb MiB of files)"
  truncate -s "$1" "$raw.tmp"
  printf 'label: dos\nstart=2048, size=204800, type=7, bootable\nstart=206848, type=7\n' | sfdisk -q "$raw.tmp"
  attach "$raw.tmp"
  mkntfs -Q -F -q -L "System Reserved" -p 2048 -H 255 -S 63 "${dev}p1" >/dev/null
  mkntfs -Q -F -q -L Windows -p 206848 -H 255 -S 63 "${dev}p2" >/dev/null
  ntfs_mount "${dev}p1" "$mnt"
  mkdir -p "$mnt/Boot"
  cp -r /usr/share/doc/bash "$mnt/Boot/" 2>/dev/null || true
  head -c 300000 /usr/bin/bash >"$mnt/bootmgr"
  ntfs_umount "${dev}p1" "$mnt"
  ntfs_mount "${dev}p2" "$mnt"
  while [ "$copied" -lt "$files_mb" ]; do
    round=$((round + 1))
    for d in "${file_dirs[@]}"; do
      [ -d "$d" ] || continue
      [ "$copied" -lt "$files_mb" ] || break
      mb=$(du -sm "$d" | cut -f1)
      mkdir -p "$mnt/Files$round"
      cp -a "$d" "$mnt/Files$round/$(echo "${d#/}" | tr / _)" 2>/dev/null || true
      copied=$((copied + mb))
    done
  done
  df -m "$mnt" | tail -1 >&2
  ntfs_umount "${dev}p2" "$mnt"
  free_loop "$dev"
  mv "$raw.tmp" "$raw"
}

grow_disk() { # SRC SIZE OUT: SRC with its second partition and NTFS volume grown to SIZE
  local dev
  [ -f "$3" ] && return
  log "growing $(basename "$1") to $2"
  cp --sparse=always "$1" "$3.tmp"
  truncate -s "$2" "$3.tmp"
  echo ',+' | sfdisk -q -N 2 "$3.tmp"
  attach "$3.tmp"
  ntfsresize -f -P "${dev}p2" <<<y >/dev/null
  # ntfsresize sets the dirty flag so that Windows runs chkdsk; the volume
  # is consistent (ntfsfix -n), and a dirty one would be captured whole.
  ntfsfix -d "${dev}p2" >/dev/null
  free_loop "$dev"
  mv "$3.tmp" "$3"
}

make_dirty() { # CLEAN OUT: the same disk with random bytes in its free space
  local dev mnt=$dir/mnt p
  [ -f "$2" ] && return
  log "building the dirty disk"
  cp --sparse=always "$1" "$2.tmp"
  attach "$2.tmp"
  for p in 1 2; do
    ntfs_mount "${dev}p$p" "$mnt"
    dd if=/dev/urandom of="$mnt/filler" bs=4M status=none 2>/dev/null || true
    sync
    rm -f "$mnt/filler"
    ntfs_umount "${dev}p$p" "$mnt"
  done
  free_loop "$dev"
  mv "$2.tmp" "$2"
}

ntfs_used() { # DEV: bytes in use on the NTFS volume (clusters not free)
  ntfsinfo -m "$1" 2>/dev/null | awk '/Cluster Size/ {c=$3} /Free Clusters/ {f=$3} /Volume Size in Clusters/ {t=$5} END {printf "%.0f", (t-f)*c}'
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
results=$dir/results.tsv
facts=$dir/facts.tsv
: >"$results"
: >"$facts"
fact() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$facts"; }
mkdir -p "$dir/logs"
# measure GROUP NAME CMDLINE: from a cold page cache, in the bench's blkio
# group; records wall seconds, peak RSS (KiB), CPU seconds, load average.
measure() {
  local group=$1 name=$2 tf secs rss cpu load out
  tf=$(mktemp)
  out=$dir/logs/$(echo "$group $name $(date +%T)" | tr -c 'A-Za-z0-9:\n-' _).log
  drop_caches
  load=$(cut -d' ' -f1 /proc/loadavg)
  log "$group: $name"
  in_throttle_group nice -n "$nice_level" /usr/bin/time -v -o "$tf" bash -c "$3" >"$out" 2>&1 \
    || { echo "FAILED: $group $name" >&2; cat "$out" >&2; exit 1; }
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tf")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
  cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {print s}' "$tf")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$group" "$name" "$secs" "$rss" "$cpu" "$load" >>"$results"
  log "  $secs s, $((rss / 1024)) MiB, load $load"
  rm -f "$tf"
}

"$bin" keygen --out "$dir/key" --name Bench >/dev/null 2>&1 || true

bench_variant() { # VARIANT RAW
  local v=$1 raw=$2 src stick=$dir/stick S=$dir/stick.mnt tgt p dev loop
  attach "$raw"
  src=$dev
  fact "$v" used $(( $(ntfs_used "${src}p1") + $(ntfs_used "${src}p2") ))
  # Sectors outside the partitions: before the first one (the second runs to the end).
  fact "$v" outside $((2048 * 512))
  fact "$v" disk "$(blockdev --getsize64 "$src")"

  truncate -s "$(( $(stat -c %s "$raw") * 3 / 2 ))" "$stick.img"
  new_loop "$stick.img"
  p=$loop
  mkfs.ext4 -q -F "$p"
  mkdir -p "$S"
  mount "$p" "$S"
  mnts[$S]=1
  cp "$dir/key.pub" "$S/"

  for _ in $(seq "$runs"); do
    rm -f "$S/$v".*
    measure "$v capture" "reliquary capture" \
      "'$bin' capture '$src' -o '$S/$v.rimg' --key '$dir/key' --name bench"
    measure "$v capture" "partclone + zstd" \
      "set -o pipefail
       head -c $((2048 * 512)) '$src' | zstd -3 -q -o '$S/$v.head.zst'
       partclone.ntfs -q -c -s '${src}p1' -o - 2>/dev/null | zstd -3 -T0 -q -o '$S/$v.p1.pc.zst'
       partclone.ntfs -q -c -s '${src}p2' -o - 2>/dev/null | zstd -3 -T0 -q -o '$S/$v.p2.pc.zst'
       sync '$S/$v.head.zst' '$S/$v.p1.pc.zst' '$S/$v.p2.pc.zst'"
    measure "$v capture" "zstd whole disk" \
      "zstd -3 -T0 -q < '$src' > '$S/$v.raw.zst' && sync '$S/$v.raw.zst'"
  done
  "$bin" inspect "$S/$v.rimg" >"$dir/$v.inspect.txt"
  "$bin" inspect --json "$S/$v.rimg" >"$dir/$v.inspect.json"
  fact "$v" stored "$(stat -c %s "$S/$v.rimg")"
  fact "$v" pc_stored "$(( $(stat -c %s "$S/$v.head.zst") + $(stat -c %s "$S/$v.p1.pc.zst") + $(stat -c %s "$S/$v.p2.pc.zst") ))"
  fact "$v" zst_stored "$(stat -c %s "$S/$v.raw.zst")"
  free_loop "$src"
  [ "$v" = clean ] || [ -n "$keep" ] || rm -f "$raw"

  truncate -s "$size" "$dir/target.raw"
  new_loop "$dir/target.raw"
  tgt=$loop
  # The partition nodes partclone writes to; they outlive each discard.
  zstd -dc "$S/$v.head.zst" | dd of="$tgt" bs=1M oflag=direct status=none
  partx -u "$tgt" 2>/dev/null || true
  partx -a "$tgt" 2>/dev/null || true
  throttle_init "$p" "$tgt"
  for _ in $(seq "$runs"); do
    for profile in field unthrottled; do
      throttle "$([ "$profile" = field ] && echo on || echo off)"
      for run in rel_norb rel_rb pc dd; do
        blkdiscard -f "$tgt" 2>/dev/null
        case $run in
          rel_norb) measure "$v $profile" "reliquary restore --no-readback" \
            "'$bin' restore '$S/$v.rimg' '$tgt' --trust '$S/key.pub' --no-audit --yes --no-readback" ;;
          rel_rb) measure "$v $profile" "reliquary restore" \
            "'$bin' restore '$S/$v.rimg' '$tgt' --trust '$S/key.pub' --no-audit --yes" ;;
          pc) measure "$v $profile" "zstd -dc | partclone.ntfs -r" \
            "set -o pipefail
             zstd -dc '$S/$v.head.zst' | dd of='$tgt' bs=1M oflag=direct status=none
             [ -e '${tgt}p2' ] || partx -a '$tgt'
             zstd -dc '$S/$v.p1.pc.zst' | partclone.ntfs -q -r -s - -o '${tgt}p1' 2>/dev/null
             zstd -dc '$S/$v.p2.pc.zst' | partclone.ntfs -q -r -s - -o '${tgt}p2' 2>/dev/null
             sync '${tgt}p1' '${tgt}p2'" ;;
          dd) measure "$v $profile" "zstd -dc | dd" \
            "set -o pipefail; zstd -dc '$S/$v.raw.zst' | dd of='$tgt' bs=4M iflag=fullblock oflag=direct conv=fsync status=none" ;;
        esac
      done
    done
  done
  throttle off
  throttle_release
  free_loop "$tgt"
  rm -f "$dir/target.raw"
  umount "$S"
  unset "mnts[$S]"
  free_loop "$p"
  rm -f "$stick.img"
}

bench_scale() { # NAME RAW: capture and restore, unthrottled, image on the local disk
  local n=$1 raw=$2 src tgt dev loop
  attach "$raw"
  src=$dev
  fact "$n" used $(( $(ntfs_used "${src}p1") + $(ntfs_used "${src}p2") ))
  fact "$n" disk "$(blockdev --getsize64 "$src")"
  rm -f "$dir/$n.rimg"
  measure "scale $n" "reliquary capture" \
    "'$bin' capture '$src' -o '$dir/$n.rimg' --key '$dir/key' --name bench"
  fact "$n" stored "$(stat -c %s "$dir/$n.rimg")"
  "$bin" inspect "$dir/$n.rimg" >"$dir/$n.inspect.txt"
  "$bin" inspect --json "$dir/$n.rimg" >"$dir/$n.inspect.json"
  fact "$n" chunks "$(python3 -c 'import json, sys; print(json.load(sys.stdin)["chunks"])' <"$dir/$n.inspect.json")"
  fact "$n" extents "$(python3 -c 'import json, sys; print(json.load(sys.stdin)["extents"]["count"])' <"$dir/$n.inspect.json")"
  free_loop "$src"
  truncate -s "$(stat -c %s "$raw")" "$dir/target.raw"
  new_loop "$dir/target.raw"
  tgt=$loop
  measure "scale $n" "reliquary restore --no-readback" \
    "'$bin' restore '$dir/$n.rimg' '$tgt' --trust '$dir/key.pub' --no-audit --yes --no-readback"
  blkdiscard -f "$tgt" 2>/dev/null
  measure "scale $n" "reliquary restore" \
    "'$bin' restore '$dir/$n.rimg' '$tgt' --trust '$dir/key.pub' --no-audit --yes"
  free_loop "$tgt"
  rm -f "$dir/target.raw" "$dir/$n.rimg"
}

clean_raw=$dir/clean-$size.raw
build_disk "$size" "$clean_raw"
case " $variants " in *" clean "*) bench_variant clean "$clean_raw" ;; esac
if [ -n "$scale_size" ]; then
  build_disk "$scale_size" "$dir/clean-$scale_size.raw"
  grow_disk "$clean_raw" "$scale_size" "$dir/grown-$scale_size.raw"
  for _ in $(seq "$runs"); do
    bench_scale "$size" "$clean_raw"
    bench_scale "$scale_size" "$dir/clean-$scale_size.raw"
    bench_scale "$scale_size-grown" "$dir/grown-$scale_size.raw"
  done
  [ -n "$keep" ] || rm -f "$dir/clean-$scale_size.raw" "$dir/grown-$scale_size.raw"
fi
case " $variants " in *" dirty "*)
  make_dirty "$clean_raw" "$dir/dirty-$size.raw"
  [ -n "$keep" ] || rm -f "$clean_raw"
  bench_variant dirty "$dir/dirty-$size.raw" ;;
esac

python3 benches/lib/fs_capture_report.py "$results" "$facts" | tee "$dir/results.md"
