#!/bin/bash
# make bench-firstboot: wall time of `nib-firstboot apply` for a full node
# (every file written and fsync'd into a fresh root; SSH host keys made
# beforehand, so key generation is excluded), median of RUNS runs, and the
# same files delivered by Debian's cloud-init as a NoCloud write_files seed
# in a chroot, as a ratio. Usage: apply.sh [CLOUDINIT_ROOTFS_TAR]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release/nib-firstboot
NIB=target/release/nib
RUNS=${RUNS:-21}
chroot_tar=${1:-}
work=$(mktemp -d)
cleanup() {
    if [ -d "$work/ci" ]; then
        for m in proc dev; do mountpoint -q "$work/ci/$m" && umount -l "$work/ci/$m"; done
    fi
    rm -rf "$work"
}
trap cleanup EXIT

$NIB seed tests/fixtures/cluster.toml --node controller01 --out "$work/seed" --format dir --instance-id iid-bench >/dev/null 2>&1
# the directories the image's packages ship (so the figure is a node's, not
# an empty directory's)
mkdir -p "$work/base/etc/ssh" "$work/base/var/lib/mysql" "$work/base/etc/mysql/mariadb.conf.d" \
    "$work/base/etc/corosync" "$work/base/etc/rabbitmq" "$work/base/var/lib/rabbitmq" \
    "$work/base/etc/systemd/system" "$work/base/etc/systemd/network" "$work/base/root"
cp tests/fixtures/root/etc/passwd tests/fixtures/root/etc/group "$work/base/etc/"
ssh-keygen -A -f "$work/base" >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for _ in $(seq "$RUNS"); do
    rm -rf "$work/r"; cp -a "$work/base" "$work/r"
    t0=$(date +%s%N)
    $BIN apply --quiet --root "$work/r" --seed "$work/seed" >/dev/null 2>&1
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000 ))
done | median > "$work/nib.us"
nib_us=$(cat "$work/nib.us")
# rendered files listed in firstboot.json, plus firstboot.json and instance-id
nfiles=$(( $(grep -c '^    "/' "$work/r/var/lib/nib/firstboot.json") + 2 ))
printf 'bench-firstboot: nib-firstboot apply, full node (%s files, fsync each, host keys excluded): median %d.%03d ms over %d runs (target <= 50 ms)\n' \
    "$nfiles" $((nib_us / 1000)) $((nib_us % 1000)) "$RUNS"

if [ -z "$chroot_tar" ] || [ ! -f "$chroot_tar" ]; then
    echo "bench-firstboot: cloud-init comparison skipped (no chroot with cloud-init; make bench-firstboot builds one with mmdebstrap)"
    exit 0
fi

# The equivalent cloud-init seed: the same files, modes and owners as write_files.
{
    echo "#cloud-config"
    echo "write_files:"
    # owners by name as the target root's own passwd/group say (not the host's)
    (cd "$work/r" && find . -type f ! -path './etc/passwd' ! -path './etc/group' ! -path './etc/ssh/*' -printf '%P %m %U %G\n' | sort) |
    while read -r path mode uid gid; do
        user=$(awk -F: -v id="$uid" '$3 == id { print $1; exit }' tests/fixtures/root/etc/passwd)
        group=$(awk -F: -v id="$gid" '$3 == id { print $1; exit }' tests/fixtures/root/etc/group)
        printf -- '- path: /%s\n  permissions: "0%s"\n  owner: "%s:%s"\n  encoding: b64\n  content: %s\n' \
            "$path" "$mode" "$user" "$group" "$(base64 -w0 "$work/r/$path")"
    done
} > "$work/ci-user-data"
printf 'instance-id: iid-bench\nlocal-hostname: controller01\n' > "$work/ci-meta-data"

mkdir "$work/ci"
tar -C "$work/ci" -xf "$chroot_tar"
# owners must exist in the chroot as on the node
for u in mysql rabbitmq memcache; do
    grep -q "^$u:" "$work/ci/etc/group" || grep "^$u:" tests/fixtures/root/etc/group >> "$work/ci/etc/group"
    grep -q "^$u:" "$work/ci/etc/passwd" || grep "^$u:" tests/fixtures/root/etc/passwd >> "$work/ci/etc/passwd"
done
mount -t proc proc "$work/ci/proc"
mount --bind /dev "$work/ci/dev"
cat > "$work/ci/etc/cloud/cloud.cfg.d/99-bench.cfg" <<'CFG'
datasource_list: [ NoCloud ]
# only what the comparison is about: read the seed, write the files
cloud_init_modules: [ write_files ]
cloud_config_modules: []
cloud_final_modules: []
CFG
ci_runs=${CI_RUNS:-5}
for _ in $(seq "$ci_runs"); do
    rm -rf "$work/ci/var/lib/cloud" "$work/ci/run/cloud-init"
    mkdir -p "$work/ci/var/lib/cloud/seed/nocloud"
    cp "$work/ci-user-data" "$work/ci/var/lib/cloud/seed/nocloud/user-data"
    cp "$work/ci-meta-data" "$work/ci/var/lib/cloud/seed/nocloud/meta-data"
    t0=$(date +%s%N)
    # local stage (finds the NoCloud seed) then the init stage (runs write_files)
    unshare -n chroot "$work/ci" sh -c 'cloud-init init --local && cloud-init init' >"$work/ci.log" 2>&1 || { tail -n 20 "$work/ci.log" "$work/ci/var/log/cloud-init.log" >&2; exit 1; }
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000 ))
done | median > "$work/ci.us"
ci_us=$(cat "$work/ci.us")
# check cloud-init really wrote the same bytes
cmp "$work/ci/etc/corosync/corosync.conf" "$work/r/etc/corosync/corosync.conf"
cmp "$work/ci/var/lib/rabbitmq/.erlang.cookie" "$work/r/var/lib/rabbitmq/.erlang.cookie"
printf 'bench-firstboot: cloud-init %s (NoCloud seed, write_files of the same files, chroot): median %d.%03d ms over %d runs\n' \
    "$(chroot "$work/ci" dpkg-query -W -f='${Version}' cloud-init)" $((ci_us / 1000)) $((ci_us % 1000)) "$ci_runs"
awk -v a="$ci_us" -v b="$nib_us" 'BEGIN { printf "bench-firstboot: ratio cloud-init / nib-firstboot = %.1fx\n", a / b }'
