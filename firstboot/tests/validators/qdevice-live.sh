#!/bin/sh
# Run by validators.rs in fresh network, mount and PID namespaces (all
# processes die with this script): a real corosync with nib's corosync.conf
# for controller01 (quorum device, no two_node), its corosync-qdevice with
# the NSS database first boot made, and the arbiter's corosync-qnetd with
# its own (as the image runs it: -s req -c on). Passes when the one
# running node is quorate: its vote plus qnetd's, over TLS.
# Arguments: the applied controller root, the applied arbiter root, a work dir.
set -eu
c=$1 a=$2 w=$3
mount --make-rprivate /
ip link set lo up
ip addr add 198.18.0.11/32 dev lo
ip addr add 198.18.0.13/32 dev lo
for d in /var/lib/corosync /run; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mkdir -p /run/corosync-qnetd /run/corosync-qdevice
mkdir -p "$w/etc-corosync/qdevice/net" "$w/etc-corosync/qnetd"
cp "$c/etc/corosync/corosync.conf" "$c/etc/corosync/authkey" "$w/etc-corosync/"
cp -a "$c/etc/corosync/qdevice/net/nssdb" "$w/etc-corosync/qdevice/net/"
cp -a "$a/etc/corosync/qnetd/nssdb" "$w/etc-corosync/qnetd/"
mount --bind "$w/etc-corosync" /etc/corosync
dump() {
  corosync-quorumtool -s || true
  corosync-qdevice-tool -sv || true
  corosync-qnetd-tool -lv || true
  tail -n 40 "$w/corosync.log" "$w/qdevice.log" "$w/qnetd.log" || true
}
corosync-qnetd -f -d -s req -c on -l 198.18.0.13 >"$w/qnetd.log" 2>&1 &
corosync -f >"$w/corosync.log" 2>&1 &
i=0
until corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1; do
  i=$((i + 1))
  [ "$i" -lt 100 ] || { echo "corosync did not start"; dump; exit 1; }
  sleep 0.1
done
corosync-qdevice -f -d >"$w/qdevice.log" 2>&1 &
i=0
until corosync-quorumtool -s 2>/dev/null | grep -q '^Quorate: *Yes'; do
  i=$((i + 1))
  [ "$i" -lt 300 ] || { echo "not quorate with qnetd's vote after 30 s"; dump; exit 1; }
  sleep 0.1
done
echo "== quorate after $i polls"
dump
