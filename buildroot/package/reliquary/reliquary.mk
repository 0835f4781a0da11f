################################################################################
#
# reliquary
#
################################################################################

RELIQUARY_VERSION = 0.1.0
RELIQUARY_SITE = $(BR2_EXTERNAL_RELIQUARY_PATH)/..
RELIQUARY_SITE_METHOD = local
RELIQUARY_LICENSE = Apache-2.0
# The workspace is copied as it is; its build outputs are not sources.
RELIQUARY_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude target --exclude .git
RELIQUARY_VENDOR_DIR = $(call qstrip,$(BR2_PACKAGE_RELIQUARY_VENDOR_DIR))

# A local package gets no download post-processing, so its crates are
# vendored ahead of time (cargo vendor --locked) and pointed at here.
define RELIQUARY_USE_VENDORED_CRATES
	test -d "$(RELIQUARY_VENDOR_DIR)" || \
		{ echo "BR2_PACKAGE_RELIQUARY_VENDOR_DIR: no vendored crates"; exit 1; }
	mkdir -p $(@D)/.cargo
	printf '[source.crates-io]\nreplace-with = "vendored-sources"\n[source.vendored-sources]\ndirectory = "%s"\n' \
		"$(RELIQUARY_VENDOR_DIR)" > $(@D)/.cargo/config.toml
endef
RELIQUARY_PRE_BUILD_HOOKS += RELIQUARY_USE_VENDORED_CRATES

RELIQUARY_CARGO_BUILD_OPTS = -p reliquary-appliance -p recovery-tui

# The workspace root is a virtual manifest, which "cargo install" refuses.
define RELIQUARY_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/reliquary \
		$(TARGET_DIR)/usr/bin/reliquary
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/recovery-tui \
		$(TARGET_DIR)/usr/bin/recovery-tui
	$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/reliquary \
		man --out $(TARGET_DIR)/usr/share/man/man1
endef

$(eval $(cargo-package))
