#!/usr/bin/env bash
# What the Makefile's deps targets run (Debian 12 host, as root).
#
#   deps.sh need PKG...        install the missing ones (apt-get, no
#                              recommends, no service started)
#   deps.sh check NAME=LIST... simulate installing each list as it is
#                              (apt-get install -s); fail naming the package
#                              and the conflict, or a package apt would remove
#   deps.sh qemu [--check]     QEMU and OVMF for make test-outputs: the
#                              installed ones, or versions that go with the
#                              installed qemu-utils, or a message in seconds;
#                              --check says which, installing nothing
#
# Why `check` exists: Debian 12 hosts often carry qemu-utils from
# bookworm-backports (10.0), which Breaks Debian 12's qemu-system-common
# (7.2); installing qemu-system-x86 there either ends in apt's "held broken
# packages" or removes qemu-utils. A list that cannot install as it is
# must be caught before it ships, not on a user's machine.
set -euo pipefail

APT_OPTS=(-o DPkg::Lock::Timeout=600 -o APT::Install-Recommends=false)

missing() {
    local p out=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || out+=("$p")
    done
    echo "${out[@]:-}"
}

# apt lists with no Packages file from the last day (or none, on a fresh
# machine) are refreshed first.
refresh_lists() {
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit 2>/dev/null)" ]; then
        apt-get "${APT_OPTS[@]}" update -qq
    fi
}

# The tests need the servers' tools (mariadbd, corosync, crm_verify…),
# never the servers running on the host: a policy-rc.d keeps apt from
# starting them.
# In a subshell, so the policy-rc.d it adds goes also on ^C or an error.
install_pkgs() (
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT INT TERM
    fi
    DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -qq "$@" >/dev/null
)

# Simulate installing PKG... as one request. Prints nothing and returns 0
# when apt would install them without removing anything; otherwise prints
# why, one line each.
simulate() {
    local out rc=0
    out=$(LC_ALL=C apt-get "${APT_OPTS[@]}" install -s "$@" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then
        grep -E '^ +[^ ].* : |^E: ' <<<"$out" | sed 's/^ *//' || echo "$out" | tail -n 3
        return 1
    fi
    local removed
    removed=$(sed -n 's/^Remv \([^ ]*\) \[\(.*\)\].*/\1 \2/p' <<<"$out")
    if [ -n "$removed" ]; then
        local inst pkg ver rel
        inst=$(sed -n 's/^Inst \([^ ]*\) .*/\1/p' <<<"$out")
        while read -r pkg ver; do
            # the removed package's own Breaks/Conflicts that name a package
            # this install brings in: the conflict, in dpkg's words
            rel=$(dpkg-query -W -f='${Breaks}, ${Conflicts}' "$pkg" 2>/dev/null | tr ',' '\n' | sed 's/^ *//' |
                while read -r dep rest; do
                    [ -n "$dep" ] && grep -Fxq -- "$dep" <<<"$inst" && echo "$dep $rest"
                done | paste -sd',' || true)
            echo "would remove the installed $pkg $ver${rel:+, which Breaks/Conflicts ${rel}}"
        done <<<"$removed"
        return 1
    fi
}

# Each package of a list that fails, with its reason, one line each.
name_failures() {
    local p one named=0
    for p in "$@"; do
        if ! one=$(simulate "$p"); then
            echo "  $p: $(paste -sd';' <<<"$one" | sed 's/;/; /g')"
            named=1
        fi
    done
    [ "$named" = 1 ] || echo "  (each installs alone; together: $(simulate "$@" | paste -sd';' | sed 's/;/; /g'))"
}

cmd_need() {
    local m
    m=$(missing "$@")
    [ -n "$m" ] || return 0
    echo "deps: installing $m"
    apt-get "${APT_OPTS[@]}" update -qq
    # shellcheck disable=SC2086 # a word list
    if ! simulate $m >/dev/null; then
        echo "deps: these packages cannot be installed here as they are (nothing was installed):" >&2
        # shellcheck disable=SC2086
        name_failures $m >&2
        exit 1
    fi
    # shellcheck disable=SC2086
    install_pkgs $m
}

cmd_check() {
    refresh_lists
    local failed=0 spec name list
    for spec in "$@"; do
        name=${spec%%=*}
        list=${spec#*=}
        # shellcheck disable=SC2086 # a word list
        if simulate $list >/dev/null; then
            echo "deps-check: $name: $(wc -w <<<"$list") packages install together"
        else
            failed=1
            echo "deps-check: $name cannot be installed here as it is:" >&2
            # shellcheck disable=SC2086
            name_failures $list >&2
        fi
    done
    return "$failed"
}

OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
QEMU_TMP=""
trap '[ -z "$QEMU_TMP" ] || rm -rf "$QEMU_TMP"' EXIT
cmd_qemu() {
    local dry="" verb=installing
    [ "${1:-}" != --check ] || { dry=1; verb="would install"; }
    if command -v qemu-system-x86_64 >/dev/null && [ -f "$OVMF_CODE" ]; then
        echo "deps: using the installed $(qemu-system-x86_64 --version | head -n1) and $OVMF_CODE"
        return 0
    fi
    local want=()
    command -v qemu-system-x86_64 >/dev/null || want+=(qemu-system-x86)
    [ -f "$OVMF_CODE" ] || want+=(ovmf)
    refresh_lists
    if simulate "${want[@]}" >/dev/null; then
        echo "deps: $verb ${want[*]}"
        [ -n "$dry" ] || install_pkgs "${want[@]}"
        return 0
    fi
    # qemu-system-x86 of the installed qemu-utils' version, from the suite
    # that version came from (a backport), through a private apt list dir:
    # the host's sources and lists are left as they are.
    local utils
    utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [[ "$utils" == *~bpo12+* ]]; then
        local tmp mirror host_opts=("${APT_OPTS[@]}")
        tmp=$(mktemp -d)
        QEMU_TMP=$tmp
        chmod 0755 "$tmp" # apt's _apt user downloads into it
        mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
        printf 'deb %s bookworm main\ndeb %s bookworm-backports main\n' "$mirror" "$mirror" >"$tmp/sources.list"
        mkdir -p "$tmp/lists/partial"
        local alt=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/nonexistent
            -o Dir::State::Lists="$tmp/lists" -t bookworm-backports)
        if timeout 60 apt-get "${APT_OPTS[@]}" "${alt[@]}" update -qq 2>/dev/null; then
            local pkgs=()
            for p in "${want[@]}"; do
                if [ "$p" = qemu-system-x86 ]; then pkgs+=("qemu-system-x86=$utils"); else pkgs+=("$p"); fi
            done
            APT_OPTS+=("${alt[@]}")
            if simulate "${pkgs[@]}" >/dev/null; then
                echo "deps: $verb ${pkgs[*]} (bookworm-backports, the installed qemu-utils' version)"
                [ -n "$dry" ] || install_pkgs "${pkgs[@]}"
                return 0
            fi
            # backports has moved past the installed version: take both
            # qemu-utils and qemu-system-x86 of its current one
            if simulate "${want[@]}" qemu-utils >/dev/null; then
                echo "deps: $verb ${want[*]} qemu-utils (bookworm-backports, one version for both)"
                [ -n "$dry" ] || install_pkgs "${want[@]}" qemu-utils
                return 0
            fi
        fi
        APT_OPTS=("${host_opts[@]}")
    fi
    local sys
    sys=$(apt-cache policy qemu-system-x86 2>/dev/null | sed -n 's/^ *Candidate: //p')
    echo "make test-outputs: qemu-system-x86 ${sys:-?} cannot be installed beside the installed qemu-utils ${utils:-?}:" >&2
    simulate "${want[@]}" | sed 's/^/  /' >&2 || true
    echo "Fix: install qemu-system-x86 of the same version as qemu-utils, e.g. from bookworm-backports" >&2
    echo "  (apt-get install -t bookworm-backports qemu-system-x86 ovmf), or qemu-utils of Debian 12's version" >&2
    echo "  (apt-get install qemu-utils=${sys:-<Debian 12 version>}). Nothing was installed." >&2
    exit 1
}

case "${1:-}" in
need) shift; cmd_need "$@" ;;
check) shift; cmd_check "$@" ;;
qemu) shift; cmd_qemu "$@" ;;
*) echo "usage: $0 need PKG... | check NAME=LIST... | qemu [--check]" >&2; exit 2 ;;
esac
