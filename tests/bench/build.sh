#!/bin/bash
# make bench-build: nib cold / clean (warm package cache) / one file changed /
# no-op, beside a bare `mmdebstrap --include=<same packages>` one-shot, as
# ratios measured in one run (this machine is shared and noisy: compare
# ratios, not absolute seconds). Uses its own caches under $BENCH_DIR.
set -euo pipefail
IMAGE=${IMAGE:-controller-bookworm}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NIB=$ROOT/target/release/nib
B=${BENCH_DIR:-/var/tmp/nib-bench}
rm -rf "$B"; mkdir -p "$B/ws/target/release" "$B/ws/firstboot"
cp -r "$ROOT/images" "$ROOT/layers" "$B/ws/"
cp -r "$ROOT/firstboot/systemd" "$B/ws/firstboot/"
cp "$ROOT/target/release/nib-firstboot" "$B/ws/target/release/"
def=$B/ws/images/$IMAGE.toml
cd "$B/ws"

now() { date +%s.%N; }
declare -A T
run() { # name, command...
  local name=$1; shift
  local t0; t0=$(now)
  "$@" > "$B/$name.log" 2>&1 || { echo "bench: $name failed, see $B/$name.log" >&2; tail -20 "$B/$name.log" >&2; exit 1; }
  T[$name]=$(echo "$(now) - $t0" | bc -l)
  printf '%-22s %7.1f s\n' "$name" "${T[$name]}"
}
nib() { "$NIB" build "$def" --cache "$B/cache" --out "$B/out" --timings; }

run cold nib
cp "$B/cold.log" "$B/cold-timings.txt"
mv "$B/cache/debs" "$B/debs"; rm -rf "$B/cache"; mkdir -p "$B/cache"; mv "$B/debs" "$B/cache/debs"
run clean-warm-packages nib
mkdir -p layers/firstboot/files/etc
echo "bench $(date +%s%N)" > layers/firstboot/files/etc/nib-bench-marker
run one-file-changed nib
run no-op nib

mirror=$(sed -n 's/^mirror *= *"\(.*\)"/\1/p' "$def" | head -n1)
suite=$(sed -n 's/^suite *= *"\(.*\)"/\1/p' "$def" | head -n1)
epoch=$(sed -n 's/^epoch *= *\([0-9]*\).*/\1/p' "$def" | head -n1)
pkgs=$("$NIB" plan "$def" --json | jq -r '[.layers[].packages[]] | unique | join(",")')
run bare-mmdebstrap env SOURCE_DATE_EPOCH="$epoch" mmdebstrap --variant=minbase --include="$pkgs" "$suite" "$B/bare.tar" "$mirror"
zstd -q -3 -T0 -f "$B/bare.tar" -o "$B/bare.tar.zst"

nib_size=$(stat -c %s "$B/out/$IMAGE/rootfs.tar.zst")
bare_size=$(stat -c %s "$B/bare.tar.zst")
echo
echo "== nib build, $IMAGE (wall seconds; ratios against bare mmdebstrap in this run)"
printf '%-34s %8s %8s %s\n' measure value ratio target
r() { echo "$1 / $2" | bc -l; }
printf '%-34s %8.1f %8.2f %s\n' "cold (empty caches)" "${T[cold]}" "$(r "${T[cold]}" "${T[bare-mmdebstrap]}")" "<= 1.30x bare"
printf '%-34s %8.1f %8.2f %s\n' "clean rebuild (warm package cache)" "${T[clean-warm-packages]}" "$(r "${T[clean-warm-packages]}" "${T[bare-mmdebstrap]}")" ""
printf '%-34s %8.1f %8.2f %s\n' "one file changed (of cold)" "${T[one-file-changed]}" "$(r "${T[one-file-changed]}" "${T[cold]}")" "<= 0.15x cold"
printf '%-34s %8.1f %8s %s\n' "no-op" "${T[no-op]}" "-" "<= 2 s"
printf '%-34s %8.1f %8s %s\n' "bare mmdebstrap" "${T[bare-mmdebstrap]}" "1.00" ""
printf '%-34s %8.0f %8.2f %s\n' "rootfs.tar.zst MB (vs bare, zstd -3)" "$(r "$nib_size" 1000000)" "$(r "$nib_size" "$bare_size")" "<= 0.80x bare"
echo
echo "== where the cold build's time went (nib build --timings)"
sed -n '/^layer /,$p' "$B/cold-timings.txt"
