#!/bin/sh
# Regenerates the golden reference image and the values its test asserts:
#   golden.rimg, golden.pub, expected.txt (and golden.pk8 if it is missing).
# The generator is the ignored test `regenerate_golden` in ../golden.rs; with
# the committed golden.pk8 it is deterministic (fixed UUID, times and key;
# Ed25519 signatures are deterministic), so re-running it changes nothing
# unless the format, the writer or the zstd library changed.
#
# Only regenerate for an intended format change, and say so in the commit.
set -eu
cd "$(dirname "$0")/../../.."
cargo test -p reliquary-image --test golden -- --ignored regenerate_golden
cargo test -p reliquary-image --test golden
git status --short image-format/tests/golden
