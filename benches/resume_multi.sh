#!/usr/bin/env bash
# Resume and several targets (issue 13), in one run, on the 4 GiB benchmark
# disk of benches/restore.sh (run that first: it builds WORK/disk.rimg).
#
#   benches/resume_multi.sh            as root, from the repository root
#   WORK=/work/bench-restore           where disk.rimg and key.pub are
#
# 1. Resume: a full restore onto a loop device (direct I/O, over a sparse
#    file on WORK's disk) is timed; a second one, onto another empty disk, is
#    killed (SIGKILL) once that target holds the first MiB of data past the middle of the disk (read
#    with O_DIRECT), and `restore --resume` finishes it. Both with
#    read-back on, the page cache dropped before each.
# 2. Three targets: three loop devices over files on a tmpfs (independent
#    devices); a restore onto each alone, then one restore onto all three.
#    Wall time, CPU seconds (user + system) and peak RSS from
#    /usr/bin/time, with read-back on and off.
# Results go to WORK/resume_multi.tsv and stdout. Not throttled.
# RUNS=3 rounds of the resume; ONLY=resume stops after them (nothing is
# written to the .tsv). FIELD=1 runs the resume rounds in the field profile
# of benches/lib/throttle.sh (the image read from WORK/stick.img, which
# benches/restore.sh builds, at 200 MB/s; the target read and written at
# 450 MB/s each).
# Needs: time (/usr/bin/time), bc, python3, cmp.
set -euo pipefail
cd "$(dirname "$0")/.."

REL=${RELIQUARY:-$PWD/target/release/reliquary}
WORK=${WORK:-/work/bench-restore}
IMG=$WORK/disk.rimg
TRUST=$WORK/key.pub
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$REL" ] || { echo "build first: cargo build --release -p reliquary-appliance" >&2; exit 1; }
[ -f "$IMG" ] || { echo "run benches/restore.sh first: it builds $IMG" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "missing /usr/bin/time (apt-get install time)" >&2; exit 1; }

SIZE=$(stat -c %s "$WORK/disk.raw")
RUN=$(mktemp -d "$WORK/resume-multi.XXXX")
LOOPS=()
STICK_LO=
# shellcheck source=benches/lib/throttle.sh
. benches/lib/throttle.sh
cleanup() {
  set +e
  throttle_release
  mountpoint -q "$RUN/stick" && umount "$RUN/stick"
  [ -n "$STICK_LO" ] && losetup -d "$STICK_LO"
  for lo in "${LOOPS[@]}"; do losetup -d "$lo"; done
  # A detached loop device lets go of its file a moment later.
  for _ in 1 2 3 4 5; do mountpoint -q "$RUN/tmpfs" || break; umount "$RUN/tmpfs" 2>/dev/null || sleep 1; done
  rm -rf "$RUN"
}
trap cleanup EXIT
log() { echo "[$(date +%T)] $*" >&2; }
# attach FILE [LOSETUP ARGS]: a loop device over a new sparse FILE, in
# $ATTACHED (not in a subshell, so that cleanup sees it in LOOPS).
attach() {
  truncate -s "$SIZE" "$1"
  ATTACHED=$(losetup -f --show "${@:2}" "$1")
  LOOPS+=("$ATTACHED")
}
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# timed NAME CMD...: runs CMD under /usr/bin/time; prints "wall cpu rss_kib".
timed() {
  local name=$1; shift
  cold
  in_throttle_group /usr/bin/time -f '%e %U %S %M' -o "$RUN/$name.time" "$@" >"$RUN/$name.out" 2>"$RUN/$name.err" \
    || { echo "$name failed:" >&2; cat "$RUN/$name.err" "$RUN/$name.out" >&2; exit 1; }
  awk '{ printf "%.2f %.2f %d\n", $1, $2 + $3, $4 }' "$RUN/$name.time"
}
# restore TARGET... FLAGS...: the command line of a restore of the image.
RESTORE=("$REL" restore "$IMG" --trust "$TRUST" --yes)

# ------------------------------------------------------------------ resume
# The first MiB at or after the middle of the disk that holds data: once
# the target holds it too, about half of the disk has been written (the
# bulk is written in disk order).
mid=$(python3 - "$WORK/disk.raw" "$SIZE" <<'PY'
import sys
path, size = sys.argv[1], int(sys.argv[2])
mib = 1 << 20
with open(path, "rb") as f:
    at = size // 2 // mib
    while at * mib < size:
        f.seek(at * mib)
        if any(f.read(mib)):
            print(at)
            break
        at += 1
PY
)
stages() {
  python3 -c 'import json,sys; print(", ".join("%s %.1f s" % (s, t) for s, t in json.load(open(sys.argv[1]))["stage_seconds"]))' "$1"
}
"$REL" audit init --dir "$RUN/audit" >/dev/null
AUDIT=(--audit "$RUN/audit" --operator bench)
if [ "${FIELD:-}" = 1 ]; then
  [ -f "$WORK/stick.img" ] || { echo "run benches/restore.sh first: it builds $WORK/stick.img" >&2; exit 1; }
  STICK_LO=$(losetup -f --show --direct-io=on --read-only "$WORK/stick.img")
  mkdir -p "$RUN/stick"
  mount -o ro "$STICK_LO" "$RUN/stick"
  RESTORE=("$REL" restore "$RUN/stick/disk.rimg" --trust "$TRUST" --yes)
fi
# field_profile TARGET: the field profile on the stick and TARGET, if asked.
field_profile() {
  [ "${FIELD:-}" = 1 ] || return 0
  throttle_release
  throttle_init "$STICK_LO" "$1"
  throttle on
}
resume_rows=()
for round in $(seq "${RUNS:-3}"); do
  # Direct I/O: the loop device passes reads and writes to the disk, as a
  # real target would, rather than serving the read-back from the page
  # cache the writes just filled.
  attach "$RUN/full$round.disk" --direct-io=on; LO=$ATTACHED
  field_profile "$LO"
  read -r full_wall _ full_rss < <(timed full "${RESTORE[@]}" "$LO" "${AUDIT[@]}" --json)
  log "round $round: full restore $full_wall s ($(stages "$RUN/full.out"))"
  # Onto a new, empty disk, killed once half of it is written.
  attach "$RUN/resume$round.disk" --direct-io=on; LO=$ATTACHED
  field_profile "$LO"
  cold
  # Not through the in_throttle_group function: $! must be the restore.
  mkdir -p "$THROTTLE_CG"
  sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$THROTTLE_CG" \
    "${RESTORE[@]}" "$LO" "${AUDIT[@]}" >/dev/null 2>&1 &
  pid=$!
  dd if="$WORK/disk.raw" bs=1M skip="$mid" count=1 status=none > "$RUN/mid.expected"
  while kill -0 "$pid" 2>/dev/null; do
    dd if="$LO" bs=1M skip="$mid" count=1 iflag=direct status=none 2>/dev/null \
      | cmp -s - "$RUN/mid.expected" && break
    sleep 0.05
  done
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  read -r resume_wall _ resume_rss < <(timed resume "${RESTORE[@]}" "$LO" "${AUDIT[@]}" --resume --json)
  skipped=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_skipped"])' "$RUN/resume.out")
  log "round $round: killed at MiB $mid of $((SIZE >> 20)); resume $resume_wall s, $skipped bytes kept ($(stages "$RUN/resume.out"))"
  cmp -n "$SIZE" "$WORK/disk.raw" "$LO" >/dev/null || { echo "the resumed disk differs" >&2; exit 1; }
  resume_rows+=("$full_wall $resume_wall $skipped $full_rss $resume_rss")
  throttle_release
  for lo in "${LOOPS[@]}"; do losetup -d "$lo"; done
  LOOPS=()
  rm -f "$RUN"/full"$round".disk "$RUN"/resume"$round".disk
done
"$REL" audit verify --dir "$RUN/audit" --key "$RUN/audit/appliance.pub" >/dev/null

if [ "${ONLY:-}" = resume ]; then
  for row in "${resume_rows[@]}"; do read -r f r _ <<<"$row"; log "resume / full: $(echo "$r / $f" | bc -l | cut -c1-4)"; done
  exit 0
fi

# ------------------------------------------------------------ three targets
log "three targets: on a tmpfs"
mkdir -p "$RUN/tmpfs"
mount -t tmpfs -o size=$(( SIZE * 3 + (1 << 30) )) tmpfs "$RUN/tmpfs"
T=()
for n in 1 2 3; do attach "$RUN/tmpfs/t$n.disk"; T+=("$ATTACHED"); done
rows=()
for readback in on off; do
  flag=(); [ $readback = off ] && flag=(--no-readback)
  slowest=0 slowest_cpu=0 single_rss=0
  for n in 0 1 2; do
    read -r w c r < <(timed "single$n-$readback" "${RESTORE[@]}" "${T[$n]}" --no-audit "${flag[@]}")
    log "single target $((n + 1)), read-back $readback: $w s, $c CPU s"
    if (( $(echo "$w > $slowest" | bc) )); then slowest=$w slowest_cpu=$c; fi
    single_rss=$r
  done
  read -r w3 c3 r3 < <(timed "three-$readback" "${RESTORE[@]}" "${T[0]}" "${T[1]}" "${T[2]}" --no-audit "${flag[@]}")
  log "three targets, read-back $readback: $w3 s, $c3 CPU s"
  for lo in "${T[@]}"; do
    cmp -n "$SIZE" "$WORK/disk.raw" "$lo" >/dev/null || { echo "$lo differs" >&2; exit 1; }
  done
  rows+=("$readback $slowest $slowest_cpu $single_rss $w3 $c3 $r3")
done

{
  printf 'resume\tfull_s\tresume_s\tratio\tskipped_bytes\tfull_rss_kib\tresume_rss_kib\n'
  for row in "${resume_rows[@]}"; do
    read -r f r k fr rr <<<"$row"
    printf 'resume\t%s\t%s\t%.2f\t%s\t%s\t%s\n' "$f" "$r" "$(echo "$r / $f" | bc -l)" "$k" "$fr" "$rr"
  done
  printf 'three\treadback\tslowest_single_s\tsingle_cpu_s\tsingle_rss_kib\tthree_s\tthree_cpu_s\tthree_rss_kib\twall_ratio\tcpu_ratio\n'
  for row in "${rows[@]}"; do
    read -r rb s sc sr w3 c3 r3 <<<"$row"
    printf 'three\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\n' "$rb" "$s" "$sc" "$sr" "$w3" "$c3" "$r3" \
      "$(echo "$w3 / $s" | bc -l)" "$(echo "$c3 / $sc" | bc -l)"
  done
} | tee "$WORK/resume_multi.tsv"
