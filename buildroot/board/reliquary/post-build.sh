#!/usr/bin/env bash
# Seals the trust store and the operators list into the root (which becomes
# the dm-verity protected squashfs). Fails closed: no trust key, no stick.
set -euo pipefail

TARGET_DIR=$1
config_value() {
	sed -n "s/^$1=\"\(.*\)\"$/\1/p" "$BR2_CONFIG"
}
trust=$(config_value BR2_PACKAGE_RELIQUARY_TRUST_DIR)
operators=$(config_value BR2_PACKAGE_RELIQUARY_OPERATORS)

if [ -z "$trust" ] || ! compgen -G "$trust/*.pub" >/dev/null; then
	echo "post-build: BR2_PACKAGE_RELIQUARY_TRUST_DIR (\"$trust\") holds no .pub key;" \
		"a stick must seal its trust keys" >&2
	exit 1
fi
sealed=$TARGET_DIR/etc/reliquary/trust
rm -rf "$sealed" && mkdir -p "$sealed"
cp "$trust"/*.pub "$sealed/"
[ -f "$trust/policy" ] && cp "$trust/policy" "$sealed/"
if [ -n "$operators" ]; then
	cp "$operators" "$sealed/operators"
elif [ -f "$trust/operators" ]; then
	cp "$trust/operators" "$sealed/operators"
fi
mkdir -p "$TARGET_DIR/vault" "$TARGET_DIR/audit"
# No login, no getty, no network services: the init is the initramfs's.
rm -f "$TARGET_DIR/etc/inittab"
