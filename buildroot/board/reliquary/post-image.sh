#!/usr/bin/env bash
# Builds the initramfs (busybox, veritysetup and their libraries from the
# target, the stick's init) and hands everything to assemble-stick.sh, the
# same assembly the Debian test stick uses.
#
# The vault is empty unless RELIQUARY_VAULT names a directory of images.
set -euo pipefail

BOARD_DIR=$(cd "$(dirname "$0")" && pwd)
work=$BUILD_DIR/reliquary-stick
rm -rf "$work" && mkdir -p "$work"

# The libraries an executable of the target needs, found with readelf.
copy_needed() {
	local file=$1 lib path
	for lib in $(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
		for path in "$TARGET_DIR/lib/$lib" "$TARGET_DIR/usr/lib/$lib"; do
			[ -e "$path" ] || continue
			[ -e "$work/initramfs/${path#"$TARGET_DIR"/}" ] && continue
			mkdir -p "$work/initramfs/$(dirname "${path#"$TARGET_DIR"/}")"
			cp -L "$path" "$work/initramfs/${path#"$TARGET_DIR"/}"
			copy_needed "$path"
		done
	done
}

initrd=$work/initramfs
mkdir -p "$initrd"/{bin,sbin,proc,sys,dev,tmp,newroot,lib/modules,lib64}
cp "$TARGET_DIR/bin/busybox" "$initrd/bin/busybox"
for applet in sh mount umount mkdir cat grep sed sleep seq readlink dirname basename \
	tail dd insmod setsid chroot stty sync poweroff echo; do
	ln -sf busybox "$initrd/bin/$applet"
done
cp "$TARGET_DIR/usr/sbin/veritysetup" "$initrd/sbin/veritysetup"
copy_needed "$initrd/bin/busybox"
copy_needed "$initrd/sbin/veritysetup"
cp -a "$TARGET_DIR"/lib/ld-linux-x86-64.so.* "$initrd/lib64/"
# Drivers are built into the kernel (linux.fragment).
: >"$initrd/lib/modules/load-order"
cp "$BOARD_DIR/initramfs/init" "$initrd/init"
(cd "$initrd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9n >"$work/initramfs.cpio.gz"

cp "$BINARIES_DIR/bzImage" "$work/vmlinuz"
cp -a "$TARGET_DIR" "$work/rootfs"
mkdir -p "$work/vault"
[ -n "${RELIQUARY_VAULT:-}" ] && cp -a "$RELIQUARY_VAULT/." "$work/vault/"
config_value() {
	sed -n "s/^$1=\"\(.*\)\"$/\1/p" "$BR2_CONFIG"
}
# GRUB i386-pc's modules and boot.img as grub2.mk built them; host-grub2's
# grub-mkimage (which grub2.mk uses too) makes core.img with the command
# line built in.
grub_pc=$(dirname "$(find "$BUILD_DIR" -path '*/build-i386-pc/grub-core/boot.img' | head -n1)")
GRUB_PC_DIR=$grub_pc GRUB_MKIMAGE=$HOST_DIR/bin/grub-mkimage \
	EFI_STUB=$(config_value BR2_PACKAGE_RELIQUARY_EFI_STUB) \
	"$BOARD_DIR/assemble-stick.sh" "$work" "$BINARIES_DIR/reliquary-stick.img" \
	"console=tty1 quiet loglevel=3 panic=30" \
	"$(config_value BR2_PACKAGE_RELIQUARY_SECUREBOOT_KEY)" \
	"$(config_value BR2_PACKAGE_RELIQUARY_SECUREBOOT_CERT)"
