#!/bin/sh
# Run by validators.rs in fresh network, mount and PID namespaces (all
# processes die with this script): a real corosync with nib's corosync.conf
# for controller01 (quorum device, no two_node), its corosync-qdevice with
# the NSS database first boot made, and the arbiter's corosync-qnetd with
# its own (as the image runs it: -s req -c on). Passes when the one
# running node is quorate: its vote plus qnetd's, over TLS; first without
# the VIP on the node's eth0 (a veth here), so the heuristics fail and the
# lone node must still get the vote, then with it (qdevice restarted, which
# runs the heuristics again on connect), so they pass.
# Arguments: the applied controller root, the applied arbiter root, a work
# dir, the heuristic (layers/cluster/files/usr/lib/nib/holds-address: the
# rendered exec_ line names where the image installs it).
set -eu
c=$1 a=$2 w=$3 heuristic=$4
mount --make-rprivate /
ip link set lo up
ip addr add 198.18.0.11/32 dev lo
ip addr add 198.18.0.13/32 dev lo
for d in /var/lib/corosync /run; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mkdir -p /run/corosync-qnetd /run/corosync-qdevice
mkdir -p "$w/etc-corosync/qdevice/net" "$w/etc-corosync/qnetd"
cp "$c/etc/corosync/corosync.conf" "$c/etc/corosync/authkey" "$w/etc-corosync/"
grep -q 'exec_vip: /usr/lib/nib/holds-address eth0 198.18.0.10$' "$w/etc-corosync/corosync.conf" || {
  echo "no VIP heuristic in corosync.conf"; exit 1; }
sed -i "s|/usr/lib/nib/holds-address|$heuristic|" "$w/etc-corosync/corosync.conf"
ip link add eth0 type veth peer name eth0-peer
ip link set eth0 up
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
quorate() {
  i=0
  until corosync-quorumtool -s 2>/dev/null | grep -q '^Quorate: *Yes'; do
    i=$((i + 1))
    [ "$i" -lt 300 ] || { echo "not quorate with qnetd's vote after 30 s"; dump; exit 1; }
    sleep 0.1
  done
}
corosync-qdevice -f -d >"$w/qdevice.log" 2>&1 &
qdevice=$!
quorate
echo "== without the VIP: quorate after $i polls"
dump
kill "$qdevice"
wait "$qdevice" || true
# Its vote goes with it: quorum again below is the new qdevice's.
i=0
while corosync-quorumtool -s 2>/dev/null | grep -q '^Quorate: *Yes'; do
  i=$((i + 1))
  [ "$i" -lt 200 ] || { echo "still quorate 20 s after qdevice stopped"; dump; exit 1; }
  sleep 0.1
done
ip addr add 198.18.0.10/24 dev eth0
corosync-qdevice -f -d >"$w/qdevice.log" 2>&1 &
quorate
echo "== with the VIP: quorate after $i polls"
dump
