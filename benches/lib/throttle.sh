# shellcheck shell=bash
# The field profile, sourced by the benches (benches/restore.sh,
# benches/fs_capture.sh): cgroup v1 blkio throttling of a USB 3 stick that
# holds the images (reads 200 MB/s) and of the SATA SSD being restored
# (writes and reads 450 MB/s).
#
#   throttle_init STICK_DEV TARGET_DEV   once both loop devices exist
#   throttle on|off                      switch the profile
#   in_throttle_group CMD [ARG...]       run a command in the bench's group
#   throttle_release                     in the EXIT trap: clear every rule
#
# The rules are set in the bench's own group and in the root group: page
# cache writeback (partclone, buffered dd, bmaptool) is issued from there.
THROTTLE_READ_BPS=${THROTTLE_READ_BPS:-200000000}   # the stick: 200 MB/s
THROTTLE_WRITE_BPS=${THROTTLE_WRITE_BPS:-450000000} # the target: 450 MB/s
THROTTLE_CG=${THROTTLE_CG:-/sys/fs/cgroup/blkio/reliquary-bench-$$}
THROTTLE_STICK_MM=
THROTTLE_TARGET_MM=

throttle_init() { # STICK_DEV TARGET_DEV
  THROTTLE_STICK_MM=$(lsblk -dno MAJ:MIN "$1" | tr -d ' ')
  THROTTLE_TARGET_MM=$(lsblk -dno MAJ:MIN "$2" | tr -d ' ')
  mkdir -p "$THROTTLE_CG"
}

throttle() { # on|off
  local r=0 w=0 dir
  [ "$1" = on ] && { r=$THROTTLE_READ_BPS; w=$THROTTLE_WRITE_BPS; }
  for dir in "$THROTTLE_CG" /sys/fs/cgroup/blkio; do
    echo "$THROTTLE_STICK_MM $r" > "$dir/blkio.throttle.read_bps_device"
    echo "$THROTTLE_TARGET_MM $w" > "$dir/blkio.throttle.write_bps_device"
    echo "$THROTTLE_TARGET_MM $w" > "$dir/blkio.throttle.read_bps_device"
  done
}

in_throttle_group() { # CMD [ARG...]
  mkdir -p "$THROTTLE_CG"
  sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$THROTTLE_CG" "$@"
}

throttle_release() {
  local mm f
  for mm in $THROTTLE_STICK_MM $THROTTLE_TARGET_MM; do
    for f in /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device /sys/fs/cgroup/blkio/blkio.throttle.write_bps_device; do
      echo "$mm 0" > "$f" 2>/dev/null || true
    done
  done
  if [ -d "$THROTTLE_CG" ]; then rmdir "$THROTTLE_CG" 2>/dev/null || true; fi
}
