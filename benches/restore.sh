#!/usr/bin/env bash
# Restore benchmark (issue 3): `reliquary restore` against dd, bmaptool and
# zstd | dd, onto a loop device, in a field profile (cgroup v1 blkio
# throttling: source 200 MB/s, target 450 MB/s) and unthrottled. Results
# and how to read them: BENCHMARKS.md (current) and benches/HISTORY.md,
# section "Restore".
#
# Run as root from the repository root:   benches/restore.sh
#   WORK=/path   working directory (default /work/bench-restore, ~12 GiB
#                of sparse files); the source disk and its image are kept
#                there and reused by later runs (delete WORK to rebuild).
#   SIZE_GIB=4   size of the controller disk.
# Needs: ntfs-3g (mkntfs, ntfs-3g FUSE mount), fdisk (sfdisk), bmap-tools,
# zstd, e2fsprogs, time (/usr/bin/time), python3, and a release build
# (`cargo build --release -p reliquary-appliance`).
set -euo pipefail
cd "$(dirname "$0")/.."

REL=${RELIQUARY:-$PWD/target/release/reliquary}
WORK=${WORK:-/work/bench-restore}
SIZE_GIB=${SIZE_GIB:-4}
MB=1000000
# shellcheck source=benches/lib/throttle.sh
. benches/lib/throttle.sh

[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$REL" ] || { echo "build first: cargo build --release -p reliquary-appliance" >&2; exit 1; }
for t in mkntfs ntfs-3g sfdisk bmaptool zstd mkfs.ext4 python3 /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
STICK_LO= TARGET_LO= NTFS_MNT=
log() { echo "[$(date +%T)] $*" >&2; }

cleanup() {
  set +e
  throttle_release
  [ -n "$NTFS_MNT" ] && umount "$NTFS_MNT" 2>/dev/null
  mountpoint -q "$WORK/stick" && umount "$WORK/stick"
  [ -n "$STICK_LO" ] && losetup -d "$STICK_LO"
  [ -n "$TARGET_LO" ] && losetup -d "$TARGET_LO"
}
trap cleanup EXIT

# ------------------------------------------------------------------ the disk
# A Windows 7 controller disk: MBR, a 100 MiB active "System Reserved" NTFS
# partition, and an NTFS partition over the rest holding ~2.6 GB of real
# files (trees from /usr, copied in through an ntfs-3g mount), plus a
# deleted 256 MiB file whose clusters still hold data (free but not zero,
# as on a used Windows disk). The rest of the free space is zero.
RAW=$WORK/disk.raw
if [ ! -f "$WORK/disk.done" ]; then
  log "building the ${SIZE_GIB} GiB source disk"
  rm -f "$RAW" "$WORK"/part*.raw
  truncate -s "${SIZE_GIB}G" "$RAW"
  sectors=$(( SIZE_GIB * 1024 * 1024 * 2 ))
  p2_start=$(( 2048 + 204800 ))
  printf 'label: dos\n2048,204800,7,*\n%d,%d,7\n' "$p2_start" $(( sectors - p2_start )) | sfdisk -q "$RAW"
  mkdir -p "$WORK/ntfs"
  for part in 1 2; do
    if [ $part = 1 ]; then start=2048; len=204800; label="System Reserved"; else start=$p2_start; len=$(( sectors - p2_start )); label=Windows; fi
    truncate -s $(( len * 512 )) "$WORK/part.raw"
    mkntfs -Q -F -q -L "$label" -p "$start" -H 255 -S 63 "$WORK/part.raw" 2>/dev/null
    ntfs-3g "$WORK/part.raw" "$WORK/ntfs"; NTFS_MNT=$WORK/ntfs
    if [ $part = 1 ]; then
      mkdir -p "$WORK/ntfs/Boot"; cp -r /usr/share/doc/bash "$WORK/ntfs/Boot/" 2>/dev/null || true
      head -c 300000 /usr/bin/bash > "$WORK/ntfs/bootmgr"
    else
      mkdir -p "$WORK/ntfs/Windows" "$WORK/ntfs/Program Files" "$WORK/ntfs/Users"
      head -c $(( 256 << 20 )) /dev/urandom > "$WORK/ntfs/hiberfil.tmp"
      sync; rm "$WORK/ntfs/hiberfil.tmp"
      cp -r /usr/bin /usr/include "$WORK/ntfs/Windows/" 2>/dev/null || true
      cp -r /usr/share "$WORK/ntfs/Users/" 2>/dev/null || true
      for d in x86_64-linux-gnu jvm llvm-14; do
        [ -d "/usr/lib/$d" ] && cp -r "/usr/lib/$d" "$WORK/ntfs/Program Files/" 2>/dev/null || true
      done
    fi
    df -h "$WORK/ntfs" | tail -1 >&2
    umount "$WORK/ntfs"; NTFS_MNT=
    dd if="$WORK/part.raw" of="$RAW" bs=4M conv=notrunc,sparse seek=$(( start * 512 )) oflag=seek_bytes status=none
    rm "$WORK/part.raw"
  done
  touch "$WORK/disk.done"
fi

if [ ! -f "$WORK/image.done" ]; then
  log "capturing, bmap, zstd"
  rm -f "$WORK/disk.rimg" "$WORK/key" "$WORK/key.pub"
  "$REL" keygen --out "$WORK/key" --name bench >/dev/null
  # Every sector, as dd and bmaptool write them: this bench measures the
  # restore pipeline; used-cluster capture has its own (benches/fs_capture.sh).
  "$REL" capture "$RAW" -o "$WORK/disk.rimg" --key "$WORK/key" --name "controller-w7" --all-sectors >&2
  bmaptool create -o "$WORK/disk.bmap" "$RAW"
  zstd -q -3 -T0 -f "$RAW" -o "$WORK/disk.raw.zst"
  touch "$WORK/image.done"
fi

# Bytes that must be written (non-zero 4 KiB blocks), and a sample of them
# (first 1 GiB of non-zero blocks) for the standalone CPU measurements.
if [ ! -f "$WORK/nonzero.txt" ]; then
  log "counting non-zero 4 KiB blocks"
  python3 - "$RAW" "$WORK/sample.bin" > "$WORK/nonzero.txt" <<'EOF'
import sys
zero = bytes(4096); n = 0; kept = 0
with open(sys.argv[1], 'rb', buffering=0) as f, open(sys.argv[2], 'wb') as out:
    while True:
        buf = f.read(4 << 20)
        if not buf: break
        mv = memoryview(buf)
        for i in range(0, len(buf), 4096):
            b = mv[i:i+4096]
            if b != zero:
                n += 4096
                if kept < (1 << 30):
                    out.write(b); kept += 4096
print(n)
EOF
fi
MUST_WRITE=$(cat "$WORK/nonzero.txt")
STORED=$(stat -c %s "$WORK/disk.rimg")
RAW_BYTES=$(stat -c %s "$RAW")

# ------------------------------------------------------------------ the stick
# Every source file on one ext4 "stick" (a loop device, direct I/O, so reads
# from it can be throttled); the raw disk written out in full, as it would
# be on a stick.
log "preparing the stick and the target"
truncate -s $(( RAW_BYTES + 2 * STORED + (2 << 30) )) "$WORK/stick.img"
STICK_LO=$(losetup -f --show --direct-io=on "$WORK/stick.img")
mkdir -p "$WORK/stick"
if ! mount "$STICK_LO" "$WORK/stick" 2>/dev/null || [ ! -f "$WORK/stick/done" ]; then
  mountpoint -q "$WORK/stick" && umount "$WORK/stick"
  mkfs.ext4 -q -F "$STICK_LO"
  mount "$STICK_LO" "$WORK/stick"
  cp --sparse=never "$RAW" "$WORK/stick/disk.raw"
  cp "$WORK/disk.rimg" "$WORK/disk.bmap" "$WORK/disk.raw.zst" "$WORK/key.pub" "$WORK/stick/"
  sync; touch "$WORK/stick/done"
fi
S=$WORK/stick
truncate -s "$RAW_BYTES" "$WORK/target.img"
TARGET_LO=$(losetup -f --show --direct-io=on "$WORK/target.img")
throttle_init "$STICK_LO" "$TARGET_LO"

RESULTS=$WORK/results.tsv
: > "$RESULTS"
# measure PROFILE NAME COMMAND: a fresh (discarded) target, cold caches, in
# the cgroup; records seconds and peak RSS.
measure() {
  local profile=$1 name=$2; shift 2
  blkdiscard "$TARGET_LO" 2>/dev/null || dd if=/dev/zero of="$TARGET_LO" bs=4M oflag=direct status=none 2>/dev/null || true
  sync; echo 3 > /proc/sys/vm/drop_caches
  local tf; tf=$(mktemp)
  log "$profile: $name"
  in_throttle_group /usr/bin/time -v -o "$tf" bash -c "$*" >"$WORK/last.out" 2>"$WORK/last.err" \
    || { echo "FAILED: $name" >&2; cat "$WORK/last.err" >&2; }
  local secs rss cpu load
  load=$(cut -d' ' -f1 /proc/loadavg)
  cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {print s}' "$tf")
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tf")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$profile" "$name" "$secs" "$rss" "$cpu" "$load" >> "$RESULTS"
  grep -E "^  [a-z]" "$WORK/last.out" | sed "s/^/    $name /" >&2 || true
  rm -f "$tf"
}

run_profile() {
  local p=$1
  throttle "$( [ "$p" = field ] && echo on || echo off )"
  measure "$p" "reliquary restore" "$REL restore $S/disk.rimg $TARGET_LO --trust $S/key.pub --no-audit --yes"
  measure "$p" "reliquary restore --no-readback" "$REL restore $S/disk.rimg $TARGET_LO --trust $S/key.pub --no-audit --yes --no-readback"
  measure "$p" "dd bs=4M oflag=direct conv=fsync" "dd if=$S/disk.raw of=$TARGET_LO bs=4M oflag=direct conv=fsync status=none"
  measure "$p" "bmaptool copy" "bmaptool -q copy --bmap $S/disk.bmap $S/disk.raw $TARGET_LO"
  measure "$p" "zstd -dc | dd oflag=direct" "zstd -dc $S/disk.raw.zst | dd of=$TARGET_LO bs=4M iflag=fullblock oflag=direct conv=fsync status=none"
}

run_profile field
run_profile unthrottled

# Unthrottled limits, measured standalone on the same bytes.
throttle off
sync; echo 3 > /proc/sys/vm/drop_caches
READ_S=$(python3 -c '
import subprocess, sys, time
t = time.monotonic()
subprocess.run(["dd", "if=" + sys.argv[1], "of=/dev/null", "bs=4M", "iflag=direct", "status=none"], check=True)
print(time.monotonic() - t)' "$S/disk.rimg")
blkdiscard "$TARGET_LO" 2>/dev/null || true
dd if=/dev/urandom of="$WORK/rand4m" bs=4M count=1 status=none
python3 - "$TARGET_LO" "$MUST_WRITE" "$WORK/rand4m" > "$WORK/write_s.txt" <<'EOF'
import os, sys, time, mmap
dev, n, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
buf = mmap.mmap(-1, 4 << 20); buf.write(open(src, 'rb').read())
fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
t = time.monotonic(); off = 0
while off < n:
    k = min(4 << 20, n - off); k -= k % 4096
    if k == 0: break
    os.pwritev(fd, [memoryview(buf)[:k]], off); off += k
os.fsync(fd); print(time.monotonic() - t)
EOF
WRITE_S=$(cat "$WORK/write_s.txt")
SAMPLE=$(stat -c %s "$WORK/sample.bin")
cat "$WORK/sample.bin" > /dev/null
SHA_CPU=$( { /usr/bin/time -f %U openssl dgst -sha256 "$WORK/sample.bin" >/dev/null; } 2>&1 )
ZSTD_LINE=$(zstd -b3 -B4194304 -i3 "$WORK/sample.bin" 2>&1 | tr '\r' '\n' | grep -E 'MB/s' | tail -1)
DEC_MBS=$(echo "$ZSTD_LINE" | grep -oE '[0-9.]+ MB/s' | tail -1 | grep -oE '[0-9.]+')
DATA_BYTES=$("$REL" inspect --json "$WORK/disk.rimg" | python3 -c 'import json,sys; print(json.load(sys.stdin)["extents"]["data_bytes"])')

python3 - "$RESULTS" <<EOF
import sys
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1])]
MB = 1e6
stored, must, raw, data = $STORED, $MUST_WRITE, $RAW_BYTES, $DATA_BYTES
cores = $(nproc)
read_s, write_s = $READ_S, $WRITE_S
sha_s = $SHA_CPU * data / $SAMPLE
dec_s = data / ($DEC_MBS * MB)
field_limit = max(stored / (200 * MB), must / (450 * MB))
unthr_limit = max(read_s, write_s, (sha_s + dec_s) / cores)
print(f"disk {raw/2**30:.2f} GiB; must write (non-zero 4 KiB blocks) {must/MB:.0f} MB; "
      f"image data extents {data/MB:.0f} MB; stored {stored/MB:.0f} MB")
print(f"field limit = max({stored/MB:.0f} MB / 200 MB/s, {must/MB:.0f} MB / 450 MB/s) = {field_limit:.2f} s")
print(f"unthrottled limit = max(O_DIRECT read of the stored bytes {read_s:.2f} s, O_DIRECT write of the must-write "
      f"bytes {write_s:.2f} s, (sha256 {sha_s:.2f} s + zstd -d {dec_s:.2f} s CPU) / {cores} cores = "
      f"{(sha_s+dec_s)/cores:.2f} s) = {unthr_limit:.2f} s")
print(f"standalone: zstd -b3 -B4M on 1 GiB of the disk's data: {'$ZSTD_LINE'.strip()}")
for prof, limit in (("field", field_limit), ("unthrottled", unthr_limit)):
    r = {n: (float(s), int(k), float(c), l) for p, n, s, k, c, l in rows if p == prof}
    print(f"\n### {prof}\n")
    print("| tool | seconds | MB/s (of the disk) | peak RSS | CPU s (user+sys) | × limit | load avg before |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n, (s, k, c, l) in r.items():
        name = n.replace("|", "\\|")
        print(f"| {name} | {s:.2f} | {raw/MB/s:.0f} | {k/1024:.0f} MiB | {c:.2f} | {s/limit:.2f} | {l} |")
    nr = r["reliquary restore --no-readback"][0]; rb = r["reliquary restore"][0]
    print(f"\nrestore --no-readback: {nr/limit:.2f}× the limit; dd/restore = {r['dd bs=4M oflag=direct conv=fsync'][0]/nr:.2f}×; "
          f"bmaptool/restore = {r['bmaptool copy'][0]/nr:.2f}×; zstd|dd/restore = {r['zstd -dc | dd oflag=direct'][0]/nr:.2f}×; "
          f"read-back adds {rb-nr:.2f} s (one read of the must-write bytes at 450 MB/s: {must/(450*MB):.2f} s; "
          f"of the whole disk: {raw/(450*MB):.2f} s)")
EOF
