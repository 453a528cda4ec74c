#!/usr/bin/env bash
# Usage: ensure-cargo-tool.sh CRATE VERSION
# Makes the cargo subcommand CRATE (cargo-deny for `make lint`, cargo-fuzz for `make fuzz`)
# available at exactly VERSION; the Makefile holds the pins.
#
# Idempotent: does nothing when `cargo <name> --version` already reports VERSION. Otherwise
# builds it from crates.io with its locked dependencies (cargo-deny: about 7 minutes on two
# cores, once per machine).
set -euo pipefail

crate=${1:?usage: ensure-cargo-tool.sh CRATE VERSION}
version=${2:?usage: ensure-cargo-tool.sh CRATE VERSION}
subcommand=${crate#cargo-}

if [[ "$(cargo "$subcommand" --version 2>/dev/null)" == "$crate $version" ]]; then
    exit 0
fi

echo "ensure-cargo-tool: installing $crate $version (minutes, once per machine)" >&2
cargo install "$crate" --version "$version" --locked --force
