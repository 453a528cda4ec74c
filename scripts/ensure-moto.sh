#!/usr/bin/env bash
# Installs moto's S3 server at <repo>/.tools/moto (a Python virtual environment, git-ignored)
# and prints the path of its moto_server. The broker-restart test (tests/it/broker_faults.rs)
# runs tansu on S3 storage served by it, because the pinned tansu build has no PostgreSQL
# engine: see tests/src/s3.rs. Idempotent: an environment whose moto_server answers --help is
# kept.
#
# Needs python3 with the venv module (Debian: python3-venv, installed by ensure-build-deps.sh).
set -euo pipefail

# moto[server] would pull every AWS service's dependencies (300+ MB); S3 and the HTTP
# server need only these.
readonly MOTO_SPEC=("moto[s3]==5.2.5" "flask==3.1.3" "flask-cors==6.0.5")

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${repo_root}/.tools/moto"
server="${venv}/bin/moto_server"

log() { printf 'ensure-moto: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

works() { [[ -x "$1" ]] && "$1" --help >/dev/null 2>&1; }

if works "${server}"; then
    printf '%s\n' "${server}"
    exit 0
fi

python="$(command -v python3 || true)"
[[ -n "${python}" ]] || die "python3 not found (Debian: apt-get install -y python3 python3-venv)"

# A virtual environment cannot be moved (its scripts name their interpreter by path), so it
# is built in place; a failed install leaves nothing that passes the check above.
rm -rf "${venv}"
"${python}" -m venv "${venv}" || die "python3 -m venv failed (Debian: apt-get install -y python3-venv)"
log "installing ${MOTO_SPEC[*]} from PyPI"
"${venv}/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: "${MOTO_SPEC[@]}" >&2 \
    || { rm -rf "${venv}"; die "pip install of ${MOTO_SPEC[*]} failed"; }
works "${server}" || die "the installed moto_server does not run"
log "installed ${MOTO_SPEC[*]}"
printf '%s\n' "${server}"
