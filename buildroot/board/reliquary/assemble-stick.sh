#!/usr/bin/env bash
# Assembles the stick image from its parts. Shared by Buildroot's
# post-image.sh and scripts/build-test-stick, so both builds have the same
# layout (genimage.cfg), boot loader configuration and verity setup.
#
# usage: assemble-stick.sh WORK OUT.img CMDLINE
#   WORK must hold: vmlinuz, initramfs.cpio.gz, rootfs/ (the root tree),
#   vault/ (the .rimg images), and may hold grub/ with prebuilt core.img,
#   boot.img and BOOTX64.EFI. CMDLINE is the kernel command line without
#   the root hash, which is added here.
# Writes OUT.img and OUT.img.manifest (what `reliquary stick verify` checks).
set -euo pipefail

BOARD_DIR=$(cd "$(dirname "$0")" && pwd)
WORK=$1
OUT=$2
CMDLINE=$3
GRUB_DIR=${GRUB_DIR:-/usr/lib/grub}
# The BIOS boot partition starts at 1 MiB (genimage.cfg).
BIOS_BOOT_LBA=2048
# Fixed times and ids make two builds of the same inputs byte-identical.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600}
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH

die() { echo "assemble-stick: $*" >&2; exit 1; }

for part in vmlinuz initramfs.cpio.gz rootfs vault; do
	[ -e "$WORK/$part" ] || die "$WORK/$part is missing"
done
# Fail closed: a stick without sealed trust keys would trust nothing or,
# worse, whatever a later step put there.
compgen -G "$WORK/rootfs/etc/reliquary/trust/*.pub" >/dev/null ||
	die "no trust keys in $WORK/rootfs/etc/reliquary/trust (refusing to build a stick that trusts nothing)"

images=$WORK/images
rm -rf "$images" && mkdir -p "$images"

# Root: squashfs plus its dm-verity hash tree.
mksquashfs "$WORK/rootfs" "$images/root.squashfs" -noappend -all-root \
	-comp xz -quiet >/dev/null
# Pad to a whole number of 4 KiB verity data blocks.
truncate -s %4096 "$images/root.squashfs"
verity_out=$(veritysetup format "$images/root.squashfs" "$images/root.verity" \
	--salt 0000000000000000000000000000000000000000000000000000000000000000 \
	--uuid 00000000-0000-0000-0000-000000000000)
root_hash=$(awk '/^Root hash:/ {print $3}' <<<"$verity_out")
[ -n "$root_hash" ] || die "veritysetup printed no root hash"
full_cmdline="$CMDLINE reliquary.roothash=$root_hash"

# Vault: ext4 sized to its content, mounted read-only on the stick.
vault_kib=$(du -sk --apparent-size "$WORK/vault" | cut -f1)
vault_kib=$(((vault_kib * 11 / 10 + 4096 + 1023) / 1024 * 1024))
mkfs.ext4 -q -F -L reliquary-vault -U 52454c51-5641-554c-5400-000000000001 \
	-E root_owner=0:0,hash_seed=52454c51-5641-554c-5400-000000000002 \
	-d "$WORK/vault" "$images/vault.ext4" "${vault_kib}K" >/dev/null
# Audit: empty ext4, the only writable partition.
mkfs.ext4 -q -F -L reliquary-audit -U 52454c51-4155-4449-5400-000000000001 \
	-E root_owner=0:0,hash_seed=52454c51-4155-4449-5400-000000000002 \
	"$images/audit.ext4" 64M >/dev/null

# GRUB for BIOS (core.img in the BIOS boot partition) and UEFI (on the ESP),
# both with grub-early.cfg built in. Buildroot's grub2 package builds them
# into WORK/grub/; the test stick makes them here with Debian's GRUB.
if [ -f "$WORK/grub/core.img" ]; then
	cp "$WORK/grub/core.img" "$images/grub-core.img"
	cp "$WORK/grub/boot.img" "$images/boot.img"
	cp "$WORK/grub/BOOTX64.EFI" "$images/BOOTX64.EFI"
else
	common_modules=(part_gpt fat search search_label configfile normal linux echo serial terminal test)
	grub-mkimage -O i386-pc -d "$GRUB_DIR/i386-pc" -c "$BOARD_DIR/grub-early.cfg" \
		-p /grub -o "$images/grub-core.img" biosdisk "${common_modules[@]}"
	cp "$GRUB_DIR/i386-pc/boot.img" "$images/boot.img"
	grub-mkimage -O x86_64-efi -d "$GRUB_DIR/x86_64-efi" -c "$BOARD_DIR/grub-early.cfg" \
		-p /grub -o "$images/BOOTX64.EFI" efi_gop "${common_modules[@]}"
fi
[ "$(stat -c %s "$images/grub-core.img")" -le $((1024 * 1024)) ] || die "core.img is over 1 MiB"
sed "s|@CMDLINE@|$full_cmdline|" "$BOARD_DIR/grub.cfg.in" >"$images/grub.cfg"

rm -f "$images/boot.vfat"
mkfs.vfat -C -n RELIQBOOT -i 52454c51 "$images/boot.vfat" $((48 * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$images/boot.vfat" ::/EFI ::/EFI/BOOT ::/grub ::/reliquary
mcopy -i "$images/boot.vfat" -m "$images/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$images/boot.vfat" -m "$images/grub.cfg" ::/grub/grub.cfg
mcopy -i "$images/boot.vfat" -m "$WORK/vmlinuz" ::/reliquary/vmlinuz
mcopy -i "$images/boot.vfat" -m "$WORK/initramfs.cpio.gz" ::/reliquary/initramfs.cpio.gz

rm -rf "$WORK/genimage-tmp" "$WORK/genimage-root" && mkdir -p "$WORK/genimage-root"
genimage --config "$BOARD_DIR/genimage.cfg" --inputpath "$images" --outputpath "$images" \
	--tmppath "$WORK/genimage-tmp" --rootpath "$WORK/genimage-root" >"$WORK/genimage.log" 2>&1 ||
	{ cat "$WORK/genimage.log" >&2; die "genimage failed"; }
stick=$images/reliquary-stick.img

# BIOS: GRUB's boot.img in the MBR's code area (the partition table stays),
# pointing at core.img; core.img's first sector lists where the rest is.
dd if="$images/boot.img" of="$stick" bs=440 count=1 conv=notrunc status=none
le64() { printf '%b' "$(printf '%016x' "$1" | sed -E 's/(..)(..)(..)(..)(..)(..)(..)(..)/\\x\8\\x\7\\x\6\\x\5\\x\4\\x\3\\x\2\\x\1/')"; }
le64 "$BIOS_BOOT_LBA" | dd of="$stick" bs=1 seek=$((0x5c)) conv=notrunc status=none
le64 $((BIOS_BOOT_LBA + 1)) | dd of="$stick" bs=1 seek=$((BIOS_BOOT_LBA * 512 + 500)) conv=notrunc status=none

mv "$stick" "$OUT"

# The manifest: every partition but audit, by GPT name, with its SHA-256.
{
	echo "reliquary-stick-manifest 1"
	echo "root-hash $root_hash"
	echo "cmdline $full_cmdline"
	sfdisk --dump "$OUT" | sed -nE 's/.*start= *([0-9]+), size= *([0-9]+),.*name="([^"]*)".*/\3 \1 \2/p' |
	while read -r name start sectors; do
		[ "$name" = reliquary-audit ] && continue
		digest=$(dd if="$OUT" bs=512 skip="$start" count="$sectors" status=none | sha256sum | cut -d' ' -f1)
		echo "partition $name $start $sectors $digest"
	done
	digest=$(dd if="$OUT" bs=440 count=1 status=none | sha256sum | cut -d' ' -f1)
	echo "mbr-boot-code $digest"
} >"$OUT.manifest"
echo "assemble-stick: wrote $OUT ($(du -h --apparent-size "$OUT" | cut -f1)), root hash $root_hash"
