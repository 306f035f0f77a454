#!/bin/bash
# make bench-peers: nib against mkosi 14 (Debian) on the same package set,
# alternating A B A B for $ROUNDS rounds; prints medians and nib/mkosi ratios
# for cold (empty layer + package caches), clean rebuild (warm package
# cache), one file changed, no-op; output size and peak memory.
# mkosi is at its best: Incremental=yes with the 14.x workaround (an empty
# <output>.cache-pre-dev, see PEERS.md).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NIB=$ROOT/target/release/nib
B=${BENCH_DIR:-/var/tmp/nib-peers}
MIRROR=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
rm -rf "$B"; mkdir -p "$B/ws/target/release" "$B/ws/firstboot" "$B/mkosi/mkosi.extra/etc" "$B/res"
cp -r "$ROOT/images" "$ROOT/layers" "$B/ws/"
cp -r "$ROOT/firstboot/systemd" "$B/ws/firstboot/"
cp "$ROOT/target/release/nib-firstboot" "$B/ws/target/release/"
def=$B/ws/images/controller-bookworm.toml
PKGS=$("$NIB" plan "$def" --json | jq -r '[.layers[].packages[]] | unique | join(",")')
sed -e "s|@MIRROR@|$MIRROR|" -e "s|@PACKAGES@|$PKGS|" "$ROOT/tests/peers/mkosi.conf.in" > "$B/mkosi/mkosi.conf"
echo "peers: package set: $PKGS"

# measure NAME CMD...: wall seconds and peak RSS (KiB) appended to res/NAME
measure() {
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$B/res/.t" "$@" > "$B/res/$name.log" 2>&1 || {
    echo "peers: $name failed (see $B/res/$name.log)" >&2; tail -20 "$B/res/$name.log" >&2; exit 1; }
  cat "$B/res/.t" >> "$B/res/$name"
  printf '  %-22s %7.1f s  %6.0f MB peak\n' "$name" "$(cut -d' ' -f1 "$B/res/.t")" "$(echo "$(cut -d' ' -f2 "$B/res/.t") / 1024" | bc -l)"
}

nib_build() { (cd "$B/ws" && "$NIB" build "$def" --quiet --cache "$B/nib-cache" --out "$B/nib-out"); }
mkosi_build() { (cd "$B/mkosi" && mkosi "$@" build); }

round_nib() {
  rm -rf "$B/nib-cache" "$B/nib-out"
  rm -f "$B/ws/layers/firstboot/files/etc/nib-peers-marker"
  measure nib-cold nib_build
  mv "$B/nib-cache/debs" "$B/nib-debs"; rm -rf "$B/nib-cache"; mkdir -p "$B/nib-cache"; mv "$B/nib-debs" "$B/nib-cache/debs"
  measure nib-clean nib_build
  mkdir -p "$B/ws/layers/firstboot/files/etc"; date +%s%N > "$B/ws/layers/firstboot/files/etc/nib-peers-marker"
  measure nib-one-file nib_build
  measure nib-noop nib_build
}

round_mkosi() {
  rm -rf "$B/mkosi/mkosi.output" "$B/mkosi/mkosi.cache" "$B/mkosi/mkosi.extra/etc/marker"
  mkdir -p "$B/mkosi/mkosi.cache" "$B/mkosi/mkosi.output"
  measure mkosi-cold mkosi_build
  measure mkosi-clean mkosi_build -ff
  # 14.x: without a build script Incremental=yes rebuilds its cache every
  # time unless <output>.cache-pre-dev exists (PEERS.md)
  for f in "$B/mkosi/mkosi.output"/*.cache-pre-inst; do [ -e "$f" ] && touch "${f%.cache-pre-inst}.cache-pre-dev"; done
  date +%s%N > "$B/mkosi/mkosi.extra/etc/marker"
  measure mkosi-one-file mkosi_build -f
  measure mkosi-noop mkosi_build -f
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS"
  round_nib
  round_mkosi
done

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
col() { cut -d' ' -f"$2" "$B/res/$1" | median; }
echo
echo "== nib vs mkosi 14, medians of $ROUNDS rounds (wall s; ratio nib/mkosi)"
printf '%-18s %9s %9s %7s  %s\n' measure nib mkosi ratio target
for m in cold:0.75 clean:0.5 one-file:0.4 noop:-; do
  k=${m%%:*}; t=${m#*:}
  n=$(col "nib-$k" 1); o=$(col "mkosi-$k" 1)
  printf '%-18s %9.1f %9.1f %7.2f  %s\n' "$k" "$n" "$o" "$(echo "$n / $o" | bc -l)" "$( [ "$t" = - ] && echo 'nib <= 2 s' || echo "<= $t")"
done
printf '%-18s %9.0f %9.0f %7.2f\n' "peak MB (cold)" "$(echo "$(col nib-cold 2) / 1024" | bc -l)" "$(echo "$(col mkosi-cold 2) / 1024" | bc -l)" "$(echo "$(col nib-cold 2) / $(col mkosi-cold 2)" | bc -l)"
nib_out=$B/nib-out/controller-bookworm/rootfs.tar.zst
mk_out=$(ls "$B/mkosi/mkosi.output"/*.tar 2>/dev/null | head -n1)
zstd -q -3 -T0 -f "$mk_out" -o "$B/mkosi.tar.zst"
printf '%-18s %9.0f %9.0f %7.2f  (zstd -3; mkosi tar uncompressed: %.0f MB)\n' "output MB" \
  "$(echo "$(stat -c %s "$nib_out") / 1000000" | bc -l)" "$(echo "$(stat -c %s "$B/mkosi.tar.zst") / 1000000" | bc -l)" \
  "$(echo "$(stat -c %s "$nib_out") / $(stat -c %s "$B/mkosi.tar.zst")" | bc -l)" "$(echo "$(stat -c %s "$mk_out") / 1000000" | bc -l)"
