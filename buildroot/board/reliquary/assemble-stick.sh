#!/usr/bin/env bash
# Assembles the stick image from its parts. Shared by Buildroot's
# post-image.sh and scripts/build-test-stick, so both builds have the same
# layout (genimage.cfg), boot chain and verity setup.
#
# usage: assemble-stick.sh WORK OUT.img CMDLINE SIGNING_KEY SIGNING_CERT
#   WORK must hold: vmlinuz, initramfs.cpio.gz, rootfs/ (the root tree),
#   vault/ (the .rimg images). CMDLINE is the kernel command line without
#   the root hash, which is added here. SIGNING_KEY and SIGNING_CERT (PEM)
#   sign the unified kernel image for UEFI Secure Boot; the build refuses to
#   run without them.
# Environment: EFI_STUB (systemd's linuxx64.efi.stub), GRUB_PC_DIR (GRUB's
#   i386-pc modules and boot.img), GRUB_MKIMAGE; Debian's paths by default.
# Writes OUT.img and OUT.img.manifest (what `reliquary stick verify` checks).
#
# The boot chain reads nothing that is not on the stick and in the manifest:
#   UEFI: \EFI\BOOT\BOOTX64.EFI is a signed unified kernel image (systemd's
#         stub + kernel + initramfs + command line); no configuration file.
#   BIOS: boot.img in the MBR loads core.img from the BIOS boot partition;
#         core.img's built-in configuration carries the command line and
#         loads the kernel and initramfs from the ESP found by position,
#         partition 2 of the drive the BIOS booted (no search by label).
set -euo pipefail

BOARD_DIR=$(cd "$(dirname "$0")" && pwd)
WORK=$1
OUT=$2
CMDLINE=$3
SIGNING_KEY=${4:-}
SIGNING_CERT=${5:-}
EFI_STUB=${EFI_STUB:-/usr/lib/systemd/boot/efi/linuxx64.efi.stub}
GRUB_PC_DIR=${GRUB_PC_DIR:-/usr/lib/grub/i386-pc}
GRUB_MKIMAGE=${GRUB_MKIMAGE:-grub-mkimage}
# The BIOS boot partition starts at 1 MiB (genimage.cfg).
BIOS_BOOT_LBA=2048
# The ESP is the stick's second GPT partition (genimage.cfg); GRUB's
# "(,gpt2)" is that partition on the drive the BIOS loaded GRUB from.
ESP_ON_BOOT_DRIVE="(,gpt2)"
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
# Fail closed: an unsigned kernel image is refused by every Secure Boot
# machine, and a stick never makes up a key.
if [ -z "$SIGNING_KEY" ] || [ ! -f "$SIGNING_KEY" ]; then
	die "no Secure Boot signing key (\"$SIGNING_KEY\"): the kernel image must be signed"
fi
if [ -z "$SIGNING_CERT" ] || [ ! -f "$SIGNING_CERT" ]; then
	die "no Secure Boot signing certificate (\"$SIGNING_CERT\")"
fi
[ -f "$EFI_STUB" ] || die "no EFI stub at $EFI_STUB (install systemd-boot-efi)"
[ -f "$GRUB_PC_DIR/boot.img" ] || die "no GRUB i386-pc in $GRUB_PC_DIR (install grub-pc-bin)"

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
# Audit: empty ext4, the only writable partition. `stick verify` checks it
# still holds this file system (label and UUID) and nothing else.
audit_uuid=52454c51-4155-4449-5400-000000000001
mkfs.ext4 -q -F -L reliquary-audit -U "$audit_uuid" \
	-E root_owner=0:0,hash_seed=52454c51-4155-4449-5400-000000000002 \
	"$images/audit.ext4" 64M >/dev/null

# UEFI: the unified kernel image, sections placed after the stub's as
# systemd documents for objcopy, then signed.
align_up() { echo $(((($1) + 0xfff) / 0x1000 * 0x1000)); }
printf '%s' "$full_cmdline" >"$images/cmdline.txt"
next_vma=0
while read -r size vma; do
	[ $((0x$vma + 0x$size)) -gt "$next_vma" ] && next_vma=$((0x$vma + 0x$size))
done < <(objdump -h "$EFI_STUB" | awk '$1 ~ /^[0-9]+$/ {print $3, $4}')
uki_sections=()
for section in .osrel:"$BOARD_DIR/rootfs-overlay/etc/os-release" .cmdline:"$images/cmdline.txt" \
	.linux:"$WORK/vmlinuz" .initrd:"$WORK/initramfs.cpio.gz"; do
	name=${section%%:*} file=${section#*:}
	next_vma=$(align_up "$next_vma")
	uki_sections+=(--add-section "$name=$file" --change-section-vma "$name=$(printf '0x%x' "$next_vma")")
	next_vma=$((next_vma + $(stat -Lc %s "$file")))
done
objcopy "${uki_sections[@]}" "$EFI_STUB" "$images/reliquary.unsigned.efi"
sbsign --key "$SIGNING_KEY" --cert "$SIGNING_CERT" --output "$images/BOOTX64.EFI" \
	"$images/reliquary.unsigned.efi" 2>"$images/sbsign.log" ||
	{ cat "$images/sbsign.log" >&2; die "sbsign could not sign the kernel image"; }
sbverify --cert "$SIGNING_CERT" "$images/BOOTX64.EFI" >/dev/null 2>&1 ||
	die "the signed kernel image does not verify against $SIGNING_CERT"

# BIOS: core.img with the command line built in; it reads no file but the
# kernel and the initramfs, from the ESP on its own drive. If they cannot be
# loaded it says so and powers off instead of offering GRUB's shell.
cat >"$images/grub-builtin.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_output console serial
linux /reliquary/vmlinuz $full_cmdline
initrd /reliquary/initramfs.cpio.gz
boot
echo "RELIQUARY: THE STICK CANNOT START: the boot code cannot load the kernel from the stick's own boot partition"
sleep 60
halt
CFG
"$GRUB_MKIMAGE" -O i386-pc -d "$GRUB_PC_DIR" -c "$images/grub-builtin.cfg" \
	-p "$ESP_ON_BOOT_DRIVE/grub" -o "$images/grub-core.img" \
	biosdisk part_gpt fat linux boot echo serial terminal sleep halt
cp "$GRUB_PC_DIR/boot.img" "$images/boot.img"
[ "$(stat -c %s "$images/grub-core.img")" -le $((1024 * 1024)) ] || die "core.img is over 1 MiB"

# The ESP: the signed kernel image for UEFI, the kernel and initramfs for
# BIOS. Sized to its content.
esp_kib=$(($(stat -c %s "$images/BOOTX64.EFI" "$WORK/vmlinuz" "$WORK/initramfs.cpio.gz" |
	awk '{s += $1} END {print s}') * 11 / 10240 + 2048))
rm -f "$images/boot.vfat"
mkfs.vfat -C -n RELIQBOOT -i 52454c51 "$images/boot.vfat" "$esp_kib" >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$images/boot.vfat" ::/EFI ::/EFI/BOOT ::/reliquary
mcopy -i "$images/boot.vfat" -m "$images/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
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

# The manifest (format: appliance/src/stick.rs): the protective MBR with its
# boot code, both GPTs (header and entry array), every partition but audit
# by GPT name, and the audit file system's UUID.
sectors=$(($(stat -c %s "$OUT") / 512))
le_at() { od -An -t "u$2" -j "$1" -N "$2" --endian=little "$OUT" | tr -d ' '; }
sha_of() { dd if="$OUT" bs=512 skip="$1" count="$2" status=none | sha256sum | cut -d' ' -f1; }
entries_lba=$(le_at $((512 + 72)) 8)
entries_sectors=$((($(le_at $((512 + 80)) 4) * $(le_at $((512 + 84)) 4) + 511) / 512))
backup_lba=$(le_at $((512 + 32)) 8)
if [ "$entries_lba" != 2 ] || [ "$backup_lba" != $((sectors - 1)) ]; then
	die "unexpected GPT layout (entries at $entries_lba, backup header at $backup_lba)"
fi
{
	echo "reliquary-stick-manifest 2"
	echo "root-hash $root_hash"
	echo "cmdline $full_cmdline"
	echo "sectors $sectors"
	echo "region protective-mbr 0 1 $(sha_of 0 1)"
	echo "region primary-gpt 1 $((1 + entries_sectors)) $(sha_of 1 $((1 + entries_sectors)))"
	backup_start=$((backup_lba - entries_sectors))
	echo "region backup-gpt $backup_start $((1 + entries_sectors)) $(sha_of "$backup_start" $((1 + entries_sectors)))"
	sfdisk --dump "$OUT" | sed -nE 's/.*start= *([0-9]+), size= *([0-9]+),.*name="([^"]*)".*/\3 \1 \2/p' |
	while read -r name start count; do
		[ "$name" = reliquary-audit ] && continue
		echo "partition $name $start $count $(sha_of "$start" "$count")"
	done
	echo "audit-fs-uuid $audit_uuid"
} >"$OUT.manifest"
echo "assemble-stick: wrote $OUT ($(du -h --apparent-size "$OUT" | cut -f1)), root hash $root_hash"
