#!/bin/bash
# make bench-peers: nib against mkosi 14 (Debian 12's package) on the same
# package set, alternating nib, mkosi, nib, mkosi over ROUNDS rounds, for
#   cold      empty layer and package caches for both
#   clean     empty layer cache, warm package cache (nib keeps only debs/;
#             mkosi -ff drops its incremental cache, keeps mkosi.cache/)
#   one-file  one small file of the top layer changed (mkosi: Incremental=yes
#             plus the empty <output>.cache-pre-dev workaround from
#             tests/peers/PEERS.md, "Running the peers here",
#             so the peer is at its best)
#   no-op     nothing changed
# and prints medians with nib/mkosi ratios against issue 8's targets.
# Wall seconds and peak RSS come from GNU time (%e %M): %M is the largest
# resident set of any one process of the build, not a sum.
#
# Usage: tests/peers/bench.sh   (root; run by `make bench-peers`, which
# installs mkosi and builds target/release/nib first)
# Env: ROUNDS (default 3), IMAGE (default controller-bookworm),
#      BENCH_TMPDIR (default /var/tmp: several GB of caches and outputs).
# Exit: 0 all targets met, 3 a target missed, 1 a build failed, 2 bad setup.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=${ROUNDS:-3}
image=${IMAGE:-controller-bookworm}
nib="$repo/target/release/nib"

die() { echo "bench-peers: $*" >&2; exit 2; }
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$rounds: give a positive whole number"
[ "$(id -u)" = 0 ] || die "must run as root (mkosi and nib build chroots)"
[ -x "$nib" ] || die "$nib missing: cargo build --release -p nib -p nib-firstboot"
for t in mkosi jq /usr/bin/time; do command -v "$t" >/dev/null || die "$t not installed (make bench-peers installs it)"; done
def="$repo/images/$image.toml"
[ -f "$def" ] || die "no image definition $def"
# Same mirror as every other build on this machine:
# tests/peers/PEERS.md, "Running the peers here".
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || die "no URIs: line in /etc/apt/sources.list.d/debian.sources"

w=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/nib-bench-peers.XXXXXX")
child=""
cleanup() {
    local rc=$?
    if [ -n "$child" ]; then
        # The timed build runs in its own session: stop it and its children.
        kill -TERM -- "-$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    # Both tools mount in private namespaces; lazy-unmount anything that
    # still shows under the work dir before deleting it.
    awk -v w="$w" 'index($2, w "/") == 1 {print $2}' /proc/self/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    if [ "$rc" != 0 ] && [ "$rc" != 3 ] && [ -f "$w/results" ]; then
        # A failed run keeps its logs (small) for the post-mortem.
        local keep="$w.logs"
        mkdir -p "$keep"
        cp "$w"/*.log "$w/results" "$keep/" 2>/dev/null || true
        find "$w/mkosi/mkosi.output" "$w/nib/out" -maxdepth 2 -printf '%y %s %p\n' >"$keep/outputs.txt" 2>/dev/null || true
        echo "bench-peers: logs kept in $keep" >&2
    fi
    rm -rf --one-file-system "$w"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- nib: a throw-away copy of the tree, so the one-file change never
# touches the repository. The definition's root is the parent of images/.
plan=$("$nib" plan "$def" --json) || die "nib plan $def failed"
packages=$(jq -r '[.layers[] | (.packages // [])[]] | reduce .[] as $p ([]; if index([$p]) then . else . + [$p] end) | join(",")' <<<"$plan")
top=$(jq -r '[.layers[] | select(.name != "finalize")] | last | .name' <<<"$plan")
[ -n "$packages" ] || die "nib plan lists no packages"
[ -f "$repo/layers/$top/layer.toml" ] || die "top layer $top has no layers/$top/layer.toml"
tree="$w/tree"
mkdir -p "$tree/images"
cp "$repo/images/$image".* "$tree/images/"
cp -a "$repo/layers" "$tree/layers"
# Files the layers install from the workspace (nib-firstboot, units).
jq -r '.layers[] | (.install // [])[] | .src' <<<"$plan" | while read -r src; do
    mkdir -p "$(dirname "$tree/$src")"
    cp -a "$repo/$src" "$tree/$src"
done
stamp_rel=etc/nib-peers/stamp
nib_stamp="$tree/layers/$top/files/$stamp_rel"
mkdir -p "$(dirname "$nib_stamp")"
cp "$here/mkosi.extra/$stamp_rel" "$nib_stamp"
nib_cache="$w/nib/cache"
nib_out="$w/nib/out"

# --- mkosi: the config of tests/peers/PEERS.md, "Running the peers here",
#     with this image's packages.
mk="$w/mkosi"
mkdir -p "$mk"
sed -e "s|@MIRROR@|$mirror|" -e "s|@PACKAGES@|$packages|" "$here/mkosi.conf.in" >"$mk/mkosi.conf"
cp -a "$here/mkosi.extra" "$mk/mkosi.extra"
mk_stamp="$mk/mkosi.extra/$stamp_rel"

echo "bench-peers: $image, $rounds round(s), top layer $top, mirror $mirror"
echo "bench-peers: packages $packages"
echo "bench-peers: nib $("$nib" --version), $(mkosi --version 2>/dev/null | head -n1)"
echo "bench-peers: work dir $w (deleted at the end)"

results="$w/results"
: >"$results"
out_file=""

# timed CASE TOOL LOG CMD...: run CMD in its own session under GNU time.
timed() {
    local case=$1 tool=$2 log=$3
    shift 3
    setsid /usr/bin/time -f '%e %M' -o "$w/time.out" "$@" >"$log" 2>&1 &
    child=$!
    local rc=0
    wait "$child" || rc=$?
    child=""
    if [ "$rc" != 0 ]; then
        echo "bench-peers: $tool $case failed (exit $rc); last lines of its log:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
    read -r secs kb < <(tail -n 1 "$w/time.out")
}

# check_stamp TOOL FILE: the built image carries the current stamp text.
check_stamp() {
    local got
    got=$(tar -xOf "$2" --wildcards "*$stamp_rel" 2>/dev/null) ||
        { echo "bench-peers: $1 output $2 has no $stamp_rel" >&2; exit 1; }
    [ "$got" = "$(cat "$mk_stamp")" ] ||
        { echo "bench-peers: $1 output has a stale $stamp_rel: $got" >&2; exit 1; }
}

run_nib() {
    local case=$1 r=$2
    case $case in
        cold) rm -rf "$nib_cache" "$nib_out" ;;
        clean)
            # Warm package cache only: every layer, tree, index and output goes.
            rm -rf "$nib_out"
            find "$nib_cache" -mindepth 1 -maxdepth 1 ! -name debs -exec rm -rf {} + ;;
    esac
    timed "$case" nib "$w/nib-$case-$r.log" "$nib" build "$tree/images/$image.toml" --out "$nib_out" --cache "$nib_cache"
    out_file=$(ls "$nib_out/$image"/rootfs.tar* 2>/dev/null | head -n1 || true)
    [ -n "$out_file" ] || { echo "bench-peers: nib wrote no rootfs.tar* in $nib_out/$image" >&2; exit 1; }
    check_stamp nib "$out_file"
}

run_mkosi() {
    local case=$1 r=$2 args=(-f)
    case $case in
        cold)
            rm -rf "$mk/mkosi.output" "$mk/mkosi.cache"
            mkdir -p "$mk/mkosi.output" "$mk/mkosi.cache"
            args=() ;;
        clean) args=(-ff) ;;
        one-file | no-op)
            # mkosi 14 bug (tests/peers/PEERS.md, "Running the peers here"):
            # with no build script it rebuilds its incremental cache every
            # time unless this empty file exists.
            [ -e "$mk_out.cache-pre-dev" ] || : >"$mk_out.cache-pre-dev" ;;
    esac
    timed "$case" mkosi "$w/mkosi-$case-$r.log" bash -c 'cd "$1" && shift && exec mkosi "$@" build' _ "$mk" "${args[@]}"
    # The image (mkosi 14 writes it in mkosi.output/<distro>~<release>/): the
    # largest regular file that is neither a cache nor hidden.
    mk_out=$(find "$mk/mkosi.output" -maxdepth 2 -type f ! -name '.*' ! -name '*.cache-pre-*' -printf '%s %p\n' | sort -n | tail -n1 | cut -d' ' -f2-)
    [ -n "$mk_out" ] || { echo "bench-peers: mkosi wrote no image in $mk/mkosi.output" >&2; exit 1; }
    out_file=$mk_out
    check_stamp mkosi "$out_file"
}
mk_out=""

cases=(cold clean one-file no-op)
for r in $(seq 1 "$rounds"); do
    for case in "${cases[@]}"; do
        if [ "$case" = one-file ]; then
            # The same one-file change in both trees.
            printf 'nib bench-peers: round %s changed this file\n' "$r" >"$mk_stamp"
            cp "$mk_stamp" "$nib_stamp"
        fi
        for tool in nib mkosi; do
            "run_$tool" "$case" "$r"
            size=$(stat -c %s "$out_file")
            echo "$case $tool $secs $kb $size" >>"$results"
            printf 'round %s  %-8s %-5s %8.1f s  %6d MiB RSS  %6d MiB %s\n' \
                "$r" "$case" "$tool" "$secs" $((kb / 1024)) $((size / 1048576)) "$(basename "$out_file")"
        done
    done
done

median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) exit 1; printf "%.3f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
col() { awk -v c="$1" -v t="$2" -v k="$3" '$1 == c && $2 == t {print $k}' "$results" | median; }

echo
echo "medians of $rounds round(s); ratio = nib/mkosi wall time; RSS = peak of one process"
printf '%-9s %9s %9s %7s  %8s %8s  %-14s %s\n' case 'nib s' 'mkosi s' ratio 'nib RSS' 'mk RSS' target result
fail=0
for case in "${cases[@]}"; do
    ns=$(col "$case" nib 3); ms=$(col "$case" mkosi 3)
    nr=$(col "$case" nib 4); mr=$(col "$case" mkosi 4)
    ratio=$(awk -v a="$ns" -v b="$ms" 'BEGIN {printf "%.2f", a / b}')
    case $case in
        cold) target="ratio <= 0.75"; ok=$(awk -v x="$ratio" 'BEGIN {print (x <= 0.75)}') ;;
        clean) target="ratio <= 0.5"; ok=$(awk -v x="$ratio" 'BEGIN {print (x <= 0.5)}') ;;
        one-file) target="ratio <= 0.4"; ok=$(awk -v x="$ratio" 'BEGIN {print (x <= 0.4)}') ;;
        no-op) target="nib <= 2 s"; ok=$(awk -v x="$ns" 'BEGIN {print (x <= 2)}') ;;
    esac
    [ "$ok" = 1 ] && res=PASS || { res=FAIL; fail=1; }
    printf '%-9s %9.1f %9.1f %7s  %4d MiB %4d MiB  %-14s %s\n' "$case" "$ns" "$ms" "$ratio" \
        $((${nr%.*} / 1024)) $((${mr%.*} / 1024)) "$target" "$res"
done
nsz=$(awk '$2 == "nib" {print $5}' "$results" | median)
msz=$(awk '$2 == "mkosi" {print $5}' "$results" | median)
printf 'output    nib %s %d MiB (zstd-compressed tar); mkosi %s %d MiB (uncompressed tar, CompressOutput=no)\n' \
    "$(basename "$(ls "$nib_out/$image"/rootfs.tar* | head -n1)")" $((${nsz%.*} / 1048576)) \
    "$(basename "$mk_out")" $((${msz%.*} / 1048576))
[ "$fail" = 0 ] || exit 3
