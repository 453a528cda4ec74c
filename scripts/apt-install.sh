# Sourced by the ensure-*.sh scripts: installs Debian packages without starting services.
#
#   source scripts/apt-install.sh
#   apt_install NAME_FOR_MESSAGES PACKAGE... [-- SERVICE...]
#
# Runs `apt-get update` and `apt-get install --no-install-recommends`, as root or through
# sudo. A package that ships a service (prometheus, postgresql) must not start it here: a
# temporary policy-rc.d answers 101 ("action forbidden") to dpkg while installing, and on a
# host running systemd the named SERVICEs are disabled afterwards. The tests need only the
# binaries.

apt_install() {
    local who=$1
    shift
    local packages=() services=()
    while [[ $# -gt 0 && $1 != "--" ]]; do
        packages+=("$1")
        shift
    done
    [[ ${1:-} == "--" ]] && shift
    services=("$@")

    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$who: ${packages[*]} missing and apt-get is unavailable; install them by hand." >&2
        return 1
    fi
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        sudo="sudo"
    fi
    local policy=/usr/sbin/policy-rc.d own_policy=false
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod +x "$policy"
        own_policy=true
    fi
    echo "$who: installing ${packages[*]}" >&2
    local status=0
    $sudo apt-get update -qq &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${packages[@]}" || status=$?
    if [[ $own_policy == true ]]; then
        $sudo rm -f "$policy"
    fi
    if [[ ${#services[@]} -gt 0 ]] && command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        for service in "${services[@]}"; do
            $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
        done
    fi
    return $status
}
