#!/usr/bin/env bash
# Usage: ensure-cargo-tool.sh CRATE VERSION
# Makes the cargo subcommand CRATE (cargo-deny for `make lint`, cargo-fuzz for `make fuzz`)
# available at exactly VERSION; the Makefile holds the pins.
#
# Idempotent: does nothing when `cargo <name> --version` already reports VERSION. Otherwise
# builds it from crates.io with its locked dependencies. cargo-deny's release profile asks
# for fat LTO in one codegen unit, a long single-threaded final step; both are overridden so
# the build uses every core (the tools run for seconds, their speed does not matter here).
set -euo pipefail

crate=${1:?usage: ensure-cargo-tool.sh CRATE VERSION}
version=${2:?usage: ensure-cargo-tool.sh CRATE VERSION}
subcommand=${crate#cargo-}

if [[ "$(cargo "$subcommand" --version 2>/dev/null)" == "$crate $version" ]]; then
    exit 0
fi

echo "ensure-cargo-tool: installing $crate $version (a few minutes, once)" >&2
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install "$crate" --version "$version" --locked --force
