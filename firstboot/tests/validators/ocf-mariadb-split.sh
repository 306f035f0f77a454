#!/bin/bash
# Single-quoted $(...) are on purpose (wait_for conditions):
# shellcheck disable=SC2016
# ocf:nib:mariadb (firstboot/ocf/mariadb) in a split, against two real
# mariadbd, pacemaker's tools replaced by ocf-stub.sh (issue 17, points 3
# and 4). Run by tests/ocf_agent.rs as PID 1 of private PID and mount
# namespaces; the network namespaces are the caller's.
#
# controller01 (198.18.0.11) is the primary, controller02 (.12) its
# semi-sync replica; a client in the third namespace commits over TCP as
# an ordinary account and records every answer. Then:
#  1. controller02's link goes down: a commit on controller01 is not
#     acknowledged, for as long as the peer is in the partition (and, 1c.,
#     while only pacemaker's peer cache has lost it);
#  2. the quorate side declares controller02 gone (monitor: quorate, the
#     partition without it): the commit is acknowledged, semi-sync off;
#     controller02 restarted and back in the partition: the monitor turns
#     semi-sync on; the same with fencing (2b.): the post-stop
#     notification turns it off, the post-start one on;
#  3. controller02's link down again, and controller01 is now the side
#     without quorum: a commit waits; pacemaker demotes and stops
#     controller01: no commit is ever acknowledged;
#  4. controller02 is promoted with no other active instance (asynchronous)
#     and takes writes; the link heals; (4a.) both lose power and start
#     cold: controller02 is elected by its newer term although
#     controller01's branch is longer; controller01, whose binlog holds
#     the commit nobody acknowledged, starts as controller02's replica: it
#     is re-seeded (a physical copy: nib-firstboot reseed from
#     controller02's reseed-donor) and ends with controller02's rows and
#     GTID, replicating;
#  5. the monitor fails a replica with a stopped SQL or IO thread, and one
#     Connecting for longer than its bound, naming the thread;
#  6. a primary stopped without a demote while a commit waits: no
#     acknowledgement either.
#
# Usage: ocf-mariadb-split.sh AGENT GOLDEN_DIR PASSWORD_FILE NETNS_A NETNS_B NETNS_CLIENT NETNS_SWITCH
set -euo pipefail
agent=$1 golden=$2 pwfile=$3
ns=("$4" "$5" "$6") switch=$7
here=$(cd "$(dirname "$0")" && pwd)
names=(controller01 controller02)
addrs=(198.18.0.11 198.18.0.12 198.18.0.20)

work=$(mktemp -d /tmp/nib-ocf-split.XXXXXX)
chmod 0755 "$work"
bg_pids=()

# shellcheck source=ocf-lib.sh
. "$here/ocf-lib.sh"
trap cleanup EXIT

ip -n "$switch" link add br0 type bridge
ip -n "$switch" link set br0 up
for i in 0 1 2; do
    ip -n "${ns[$i]}" link set lo up
    ip -n "${ns[$i]}" link add eth0 type veth peer name "p$i" netns "$switch"
    ip -n "${ns[$i]}" addr add "${addrs[$i]}/24" dev eth0
    ip -n "${ns[$i]}" link set eth0 up
    ip -n "$switch" link set "p$i" master br0 up
done

mkdir -p "$work/out" "$work/state" "$work/rsctmp" "$work/stubs" "$work/client"
install_seed
for i in 0 1; do
    d=$work/n$i
    mkdir -p "$d"
    cp -a "$work/seed" "$d/data"
    g=$golden/${names[$i]}
    sed -e "s|^init_file = .*|init_file = $d/nib-init.sql|" "$g/etc/mysql/mariadb.conf.d/60-nib.cnf" >"$d/my.cnf"
    install -m 0640 -g mysql "$g/etc/mysql/nib-init.sql" "$d/nib-init.sql"
    node_tmpdir "$i"
    chown mysql:mysql "$d"
done
for t in crm_attribute crm_master attrd_updater crm_node pacemakerd systemctl \
    cibadmin crm_mon crm_resource crm_failcount crm_standby stonith_admin mysql \
    corosync-cmapctl corosync-quorumtool; do
    ln -s "$here/ocf-stub.sh" "$work/stubs/$t"
done
# the agent's re-seed runs nib-firstboot (ocf_agent.rs names the binary)
ln -s "${NIB_FIRSTBOOT:?the nib-firstboot binary}" "$work/stubs/nib-firstboot"
export NIB_STUB_STATE=$work/state
# where each node replicates from (the agent's documented node attribute;
# the nodes' names resolve nowhere here)
for i in 0 1; do printf '%s' "${addrs[$i]}" >"$NIB_STUB_STATE/mariadb_mysql_master_IP@${names[$i]}"; done

# run NODE ACTION NAME [VAR=VALUE...]: the agent (ocf_run)
run() {
    local i=$1
    shift
    ocf_run "$i" "$agent" "$@"
}
must() { local rc=0; run "$@" || rc=$?; [ "$rc" -eq 0 ] || fail "$2 on node $1 ($3): rc $rc: $(tail -n 5 "$work/out/$3")"; }
replicating() { [ "$(slave_field "$1" Slave_IO_Running)" = Yes ] && [ "$(slave_field "$1" Slave_SQL_Running)" = Yes ]; }
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

# The client: commit ID through NODE's address over TCP as an ordinary
# account, in the client namespace; its answer in $work/client/ID:
# "OK <ms>" or "ERR <ms> <message>". Started in the background: its
# PID in cpid.
commit() {
    local node=$1 id=$2
    (
        t0=$(now_ms)
        if out=$(ip netns exec "${ns[2]}" env MYSQL_PWD=app-pw mariadb --no-defaults \
            -h "${addrs[$node]}" -u app -N -B -e "INSERT INTO nibtest.t VALUES ($id)" 2>&1); then
            echo "OK $(($(now_ms) - t0))" >"$work/client/$id"
        else
            echo "ERR $(($(now_ms) - t0)) $(echo "$out" | grep -m1 '^ERROR' || echo "$out" | tr '\n' ' ')" >"$work/client/$id"
        fi
    ) &
    cpid=$!
    bg_pids+=("$cpid")
}
answer() { cat "$work/client/$1" 2>/dev/null || true; }
acked() { grep -l '^OK' "$work"/client/* 2>/dev/null | xargs -r -n1 basename | sort -n; }
# The promoted monitor on controller01 (out file NAME) declares nothing:
# rc 8, commit 101 still unanswered, semi-sync still on. WHY names the case.
monitor_declares_nothing() { # NAME WHY
    local rc=0
    run 0 monitor "$1" OCF_RESKEY_CRM_meta_interval=5000 || rc=$?
    [ "$rc" -eq 8 ] || fail "promoted monitor ($2): rc $rc, want 8"
    sleep 1
    [ -z "$(answer 101)" ] || fail "commit 101 answered $2: $(answer 101)"
    [ "$(status_var 0 Rpl_semi_sync_master_status)" = ON ] || fail "semi-sync turned off $2"
}

# --- the pair: controller01 primary (both instances active), controller02 replica
must 0 start start-a
must 0 promote promote-a OCF_RESKEY_CRM_meta_notify_active_uname="controller01 controller02"
must 1 start start-b OCF_RESKEY_CRM_meta_notify_master_uname=controller01
wait_for 30 "replication on controller02" 'replicating 1'
wait_for 30 "a semi-sync replica on controller01" '[ "$(status_var 0 Rpl_semi_sync_master_clients)" = 1 ]'
[ "$(q 0 'SELECT @@rpl_semi_sync_master_timeout')" -ge 86400000 ] || fail "semi-sync times out after $(q 0 'SELECT @@rpl_semi_sync_master_timeout') ms"
[ "$(q 0 'SELECT @@rpl_semi_sync_master_wait_no_slave')" = 1 ] || fail "wait_no_slave OFF on the primary"
q 0 "CREATE DATABASE nibtest; CREATE TABLE nibtest.t (id INT PRIMARY KEY) ENGINE=InnoDB;
     CREATE USER app@'%' IDENTIFIED BY 'app-pw'; GRANT ALL ON nibtest.* TO app@'%'"
for r in 1 2 3 4 5; do
    commit 0 "$r"; wait "$cpid"
    [[ $(answer "$r") == OK* ]] || fail "commit $r: $(answer "$r")"
done
wait_for 10 "controller02 to apply the rows" '[ "$(q 1 "SELECT COUNT(*) FROM nibtest.t")" = 5 ]'
echo "pair: controller01 primary, controller02 semi-sync replica, 5 rows acknowledged"

# --- 1. the replica's link down: no acknowledgement while the peer is in the partition
ip -n "${ns[1]}" link set eth0 down
t_cut=$(now_ms)
commit 0 101; p=$cpid
sleep 3
[ -z "$(answer 101)" ] || fail "commit 101 answered with the replica cut off: $(answer 101)"

echo "controller01 controller02" >"$NIB_STUB_STATE/partition"
monitor_declares_nothing monitor-a-both "while the peer was still in the partition"
echo "1. replica cut off: commit waiting $(($(now_ms) - t_cut)) ms, not acknowledged (semi-sync $(status_var 0 Rpl_semi_sync_master_status), wait sessions $(status_var 0 Rpl_semi_sync_master_wait_sessions))"

# --- 1b. two_node (no quorum device): both halves of a split are quorate,
#     so quorum without the peer declares nothing (only fencing does)
echo "controller01" >"$NIB_STUB_STATE/partition"
: >"$NIB_STUB_STATE/two_node"
monitor_declares_nothing monitor-a-two-node "under two_node before any fencing"
rm -f "$NIB_STUB_STATE/two_node"
echo "1b. two_node, peer outside the partition, not fenced: commit 101 still waiting"

# --- 1c. mid-way through the membership change: pacemaker's peer cache has
#     lost controller02 and still says quorate (its last quorum
#     notification), corosync waits for the quorum device's vote on the new
#     membership: nothing is declared yet (this node may be the one about
#     to lose quorum)
echo "controller01 controller02" >"$NIB_STUB_STATE/partition"
echo "controller01" >"$NIB_STUB_STATE/cpg"
monitor_declares_nothing monitor-a-mid-sync "while corosync had not decided the new membership's quorum"
rm -f "$NIB_STUB_STATE/cpg"
echo "1c. peer gone from pacemaker's peer cache, not yet from corosync's quorum: commit 101 still waiting"

# --- 2. the quorate side (controller01 + arbiter) declares controller02 gone
echo "controller01" >"$NIB_STUB_STATE/partition"
t_gone=$(now_ms)
rc=0; run 0 monitor monitor-a-gone OCF_RESKEY_CRM_meta_interval=5000 || rc=$?
[ "$rc" -eq 8 ] || fail "promoted monitor: rc $rc, want 8"
wait "$p"
[[ $(answer 101) == OK* ]] || fail "commit 101 not acknowledged after the peer was declared gone: $(answer 101)"
[ "$(status_var 0 Rpl_semi_sync_master_status)" = OFF ] || fail "semi-sync still on"
# the next monitors keep it off: the cut-off replica's dump thread is gone
# with it, and the peer is still outside the partition
rc=0; run 0 monitor monitor-a-gone2 OCF_RESKEY_CRM_meta_interval=5000 || rc=$?
[ "$rc" -eq 8 ] || fail "promoted monitor: rc $rc, want 8"
[ "$(status_var 0 Rpl_semi_sync_master_status)" = OFF ] || fail "semi-sync on again, with the peer still gone"
[ "$(status_var 0 Rpl_semi_sync_master_clients)" = 0 ] || fail "the gone replica still counts as connected"
echo "2. peer declared gone: commit 101 acknowledged $(($(now_ms) - t_gone)) ms after the monitor ran, $(answer 101 | cut -d' ' -f2) ms after it was sent"
commit 0 102; p=$cpid; wait "$p"
[[ $(answer 102) == OK* ]] || fail "commit 102 on the primary without a replica: $(answer 102)"
# the replica comes back: pacemaker restarts its instance, then notifies the primary
ip -n "${ns[1]}" link set eth0 up
echo "controller01 controller02" >"$NIB_STUB_STATE/partition"
must 1 stop stop-b
must 1 start start-b2 OCF_RESKEY_CRM_meta_notify_master_uname=controller01
wait_for 30 "replication on controller02" 'replicating 1'
wait_for 30 "a semi-sync replica on controller01" '[ "$(status_var 0 Rpl_semi_sync_master_clients)" = 1 ]'
# (here the promoted monitor turns it on again; in 4. the post-start notification)
rc=0; run 0 monitor monitor-a-back OCF_RESKEY_CRM_meta_interval=5000 || rc=$?
[ "$rc" -eq 8 ] || fail "promoted monitor: rc $rc, want 8"
wait_for 30 "semi-sync on again" '[ "$(status_var 0 Rpl_semi_sync_master_status)" = ON ]'
yes0=$(status_var 0 Rpl_semi_sync_master_yes_tx)
commit 0 103; p=$cpid; wait "$p"
[[ $(answer 103) == OK* ]] || fail "commit 103: $(answer 103)"
[ "$(status_var 0 Rpl_semi_sync_master_yes_tx)" -gt "$yes0" ] || fail "commit 103 was not semi-sync acknowledged"
echo "   replica back (restarted; the promoted monitor): semi-sync on, commit 103 acknowledged by the replica"

# --- 2b. the same with fencing: pacemaker declares the peer gone by the
#     post-stop notification it sends once the node is fenced
ip -n "${ns[1]}" link set eth0 down
commit 0 150; p=$cpid
sleep 2
[ -z "$(answer 150)" ] || fail "commit 150 answered with the replica cut off: $(answer 150)"
t_gone=$(now_ms)
must 0 notify notify-a-post-stop OCF_RESKEY_CRM_meta_notify_type=post OCF_RESKEY_CRM_meta_notify_operation=stop \
    OCF_RESKEY_CRM_meta_notify_stop_uname="controller02 " OCF_RESKEY_CRM_meta_notify_master_uname=controller01
wait "$p"
[[ $(answer 150) == OK* ]] || fail "commit 150 not acknowledged after the post-stop notification: $(answer 150)"
[ "$(status_var 0 Rpl_semi_sync_master_status)" = OFF ] || fail "semi-sync still on after the post-stop notification"
echo "2b. post-stop notification for controller02: commit 150 acknowledged $(($(now_ms) - t_gone)) ms after it started"
ip -n "${ns[1]}" link set eth0 up
must 1 stop stop-b3
must 1 start start-b3 OCF_RESKEY_CRM_meta_notify_master_uname=controller01
wait_for 30 "replication on controller02" 'replicating 1'
wait_for 30 "a semi-sync replica on controller01" '[ "$(status_var 0 Rpl_semi_sync_master_clients)" = 1 ]'
must 0 notify notify-a-post-start2 OCF_RESKEY_CRM_meta_notify_type=post OCF_RESKEY_CRM_meta_notify_operation=start \
    OCF_RESKEY_CRM_meta_notify_start_uname="controller02 " OCF_RESKEY_CRM_meta_notify_master_uname=controller01
wait_for 30 "semi-sync on again" '[ "$(status_var 0 Rpl_semi_sync_master_status)" = ON ]'

# --- 3. controller02's link down again; this time controller01 is the side without quorum
wait_for 10 "controller02 to have rows 103 and 150" '[ "$(q 1 "SELECT COUNT(*) FROM nibtest.t WHERE id IN (103, 150)")" = 2 ]'
ip -n "${ns[1]}" link set eth0 down
# (4a.) controller01's branch is to end longer than controller02's: its
# binlog group commit waits for 62 transactions (201, 203, 210-269), so
# that one group, all in its binlog, waits for an ACK nobody sends
before=$(q 0 'SELECT @@gtid_binlog_pos')
q 0 'SET GLOBAL binlog_commit_wait_count = 62, binlog_commit_wait_usec = 30000000' >/dev/null
commit 0 201; p1=$cpid
commit 1 202; p2=$cpid # (controller02 is unreachable from the client too: a refused write)
sleep 2
[ -z "$(answer 201)" ] || fail "commit 201 answered with the replica cut off: $(answer 201)"
echo "controller01" >"$NIB_STUB_STATE/partition"
echo 0 >"$NIB_STUB_STATE/quorate"
rc=0; run 0 monitor monitor-a-noquorum OCF_RESKEY_CRM_meta_interval=5000 || rc=$?
[ "$rc" -eq 8 ] || fail "promoted monitor: rc $rc, want 8"
sleep 0.5
[ -z "$(answer 201)" ] || fail "commit 201 answered on a primary without quorum: $(answer 201)"
# pacemaker, without quorum: VIP stopped, pre-demote notification, demote, stop
commit 0 203; p3=$cpid
waiting=()
for id in $(seq 210 269); do commit 0 "$id"; waiting+=("$cpid"); done
wait_for 30 "62 commits in controller01's binlog" '[ "$(q 0 "SELECT @@gtid_binlog_pos" | sed "s/.*-//")" -ge $((${before##*-} + 62)) ]'
q 0 'SET GLOBAL binlog_commit_wait_count = 0' >/dev/null
# and clients that keep connecting while it is demoted (the e2e writer
# reconnects after every failed insert): a new session's commit queued
# behind a group whose leader was killed went through with it, told OK
# (isolate-primary-45s, lost=1)
storm() {
    local id=700
    while [ ! -e "$work/storm.stop" ] && [ "$id" -lt 3000 ]; do
        commit 0 "$id"
        id=$((id + 1))
        sleep 0.01
    done
    wait
}
storm &
storm_pid=$!
bg_pids+=("$storm_pid")
sleep 0.3
t_demote=$(now_ms)
must 0 notify notify-a-pre-demote OCF_RESKEY_CRM_meta_notify_type=pre OCF_RESKEY_CRM_meta_notify_operation=demote \
    OCF_RESKEY_CRM_meta_notify_demote_uname="controller01 "
must 0 demote demote-a
t_demoted=$(now_ms)
sleep 0.3
: >"$work/storm.stop"
wait "$storm_pid" || true
wait "$p1" "$p3" "${waiting[@]}" || true
storm_ids=$(cd "$work/client" && ls | awk '$1 >= 700 && $1 < 3000' | sort -n)
[ "$(echo "$storm_ids" | wc -w)" -ge 20 ] || fail "the storm sent only $(echo "$storm_ids" | wc -w) commits"
for id in 201 203 $(seq 210 269) $storm_ids; do
    [[ $(answer "$id") != OK* ]] || fail "commit $id was acknowledged by a primary cut off from its replica: $(answer "$id")"
done
echo "3. pre-demote and demote on the primary without quorum: $((t_demoted - t_demote)) ms; $(echo "$storm_ids" | wc -w) commits on new connections meanwhile, none acknowledged; $(grep -o 'read_only=ON [^"]*' "$work/ha.log" | tail -n 1)"
commit 0 204; p4=$cpid; wait "$p4" || true
[[ $(answer 204) == ERR* ]] || fail "commit 204 on the demoted node: $(answer 204)"
must 0 stop stop-a
echo "   commit 201: $(answer 201); 203: $(answer 203); 210-269 not acknowledged either; 204 after the demote: $(answer 204)"

# --- 4. controller02 promoted (controller01's instance stopped: no other active instance)
must 1 promote promote-b OCF_RESKEY_CRM_meta_notify_active_uname="controller02 " \
    OCF_RESKEY_CRM_meta_notify_stop_uname="controller01 "
[ "$(q 1 'SELECT @@read_only')" = 0 ] || fail "controller02 read-only after promote"
[ "$(status_var 1 Rpl_semi_sync_master_status)" = OFF ] || fail "controller02 waits for a replica that is gone"
ip -n "${ns[1]}" link set eth0 up
wait "$p2" || true
for r in $(seq 301 340); do
    commit 1 "$r"; wait "$cpid"
    [[ $(answer "$r") == OK* ]] || fail "commit $r on the new primary: $(answer "$r")"
done
ours=$(mariadb --no-defaults -S "$work/n0/mysqld.sock" 2>/dev/null -e 'SELECT 1' || true)
[ -z "$ours" ] || fail "controller01's mariadbd still runs after stop"
echo "4. controller02 promoted, asynchronous: 40 commits acknowledged"

# --- 4a. a power cut of both before controller01 is re-seeded, then a cold
#     start of both: the heartbeat agent elects the first primary (8. in
#     the agent). controller01's branch is the longer (its commits nobody
#     acknowledged), controller02's the newer (its promotion's term): the
#     newer must win, or the 40 acknowledged commits would be lost.
[ "$(q 1 'SELECT term FROM nib.term WHERE id = 1')" = 2 ] || fail "controller02's promote did not write term 2: $(q 1 'SELECT * FROM nib.term' 2>&1)"
[ "$(q 1 'SELECT @@gtid_binlog_pos')" != "" ] || fail "no GTID on controller02"
kill_node 1 || fail "controller02's mariadbd did not die"
# nothing promoted, no scores: what a cold start finds
echo "" >"$NIB_STUB_STATE/promoted"
rm -f "$NIB_STUB_STATE"/promotion-mariadb@*
must 0 start start-a-cold
must 1 start start-b-cold
seq0=$(q 0 'SELECT @@gtid_binlog_pos') seq1=$(q 1 'SELECT @@gtid_binlog_pos')
[ "${seq0##*-}" -gt "${seq1##*-}" ] || fail "the control failed: controller01's branch ($seq0) is not longer than controller02's ($seq1)"
elected=$(grep -o 'Promoting [^ ]* to master, highest gtid [^,]*' "$work/ha.log" | tail -n 1)
[ -e "$NIB_STUB_STATE/promotion-mariadb@controller02" ] && [ ! -e "$NIB_STUB_STATE/promotion-mariadb@controller01" ] ||
    fail "cold-start election: scores $(cd "$NIB_STUB_STATE" && grep -H . promotion-mariadb@* 2>/dev/null | tr '\n' ' '); ${elected:-no election}"
echo "4a. power cut of both, cold start: controller01 at $seq0 (term $(q 0 'SELECT term FROM nib.term WHERE id = 1')), controller02 at $seq1 (term 2); ${elected}"
must 1 promote promote-b-cold OCF_RESKEY_CRM_meta_notify_active_uname="controller01 controller02"
must 0 stop stop-a-cold
rm -f "$NIB_STUB_STATE/promoted"
# controller01 starts as controller02's replica: its binlog holds 201/203's GTID(s), which controller02 lacks
# controller02's re-seed donor (nib-reseed-donor.service on a node)
ip netns exec "${ns[1]}" unshare --uts sh -c 'hostname controller02 && exec "$@"' sh \
    "$NIB_FIRSTBOOT" reseed-donor --role-data "$NIB_ROLE_DATA" \
    --config "$work/n1/my.cnf" --socket "$work/n1/mysqld.sock" >"$work/out/donor.log" 2>&1 &
bg_pids+=($!)
wait_for 10 "the re-seed donor on controller02" 'grep -q "listening on" "$work/out/donor.log"'
t_join=$(now_ms)
must 0 start start-a-rejoin OCF_RESKEY_CRM_meta_notify_master_uname=controller02
t_joined=$(now_ms)
why=$(grep -o 'Re-seeding this node from the primary .*' "$work/ha.log" | tail -n 1)
# (its binlog holds the GTID of commit 201 or 203, from server 1)
[[ $why == *": this node has 0-1-"* ]] || fail "controller01 was not re-seeded for its own transactions: ${why:-no re-seed}; $(grep -i 'seed\|gtid' "$work/ha.log" | tail -5)"
wait_for 30 "replication on controller01" 'replicating 0'
wait_for 30 "controller01 at controller02's GTID" '[ "$(q 0 "SELECT @@gtid_current_pos")" = "$(q 1 "SELECT @@gtid_binlog_pos")" ]'
must 1 notify notify-b-post-start OCF_RESKEY_CRM_meta_notify_type=post OCF_RESKEY_CRM_meta_notify_operation=start \
    OCF_RESKEY_CRM_meta_notify_start_uname="controller01 " OCF_RESKEY_CRM_meta_notify_master_uname=controller02
wait_for 30 "semi-sync on controller02" '[ "$(status_var 1 Rpl_semi_sync_master_status)" = ON ]'
commit 1 401; p=$cpid; wait "$p"
[[ $(answer 401) == OK* ]] || fail "commit 401: $(answer 401)"
wait_for 10 "row 401 on controller01" '[ "$(q 0 "SELECT COUNT(*) FROM nibtest.t WHERE id = 401")" = 1 ]'
rows0=$(q 0 "SELECT GROUP_CONCAT(id ORDER BY id) FROM nibtest.t")
rows1=$(q 1 "SELECT GROUP_CONCAT(id ORDER BY id) FROM nibtest.t")
[ "$rows0" = "$rows1" ] || fail "after the re-seed controller01 has $rows0, controller02 $rows1"
lost=""
for id in $(acked); do
    [ "$(q 1 "SELECT COUNT(*) FROM nibtest.t WHERE id = $id")" = 1 ] || lost+=" $id"
done
[ -z "$lost" ] || fail "acknowledged commits missing on the final primary:$lost"
echo "   $why"
echo "   donor: $(grep -o 're-seed donor: streamed .*' "$work/out/donor.log" | tail -n 1)"
echo "   rejoin with re-seed: $((t_joined - t_join)) ms ($(grep -o 'Re-seeded from .*' "$work/ha.log" | tail -1)); both at GTID $(q 1 'SELECT @@gtid_binlog_pos'), $(q 1 'SELECT COUNT(*) FROM nibtest.t') rows, equal; acknowledged $(acked | wc -l), lost 0"

# --- 5. the monitor and a replica's threads
rc=0; run 0 monitor monitor-a-healthy OCF_RESKEY_CRM_meta_interval=1000 || rc=$?
[ "$rc" -eq 0 ] || fail "monitor on the healthy replica: rc $rc"
q 0 "STOP SLAVE SQL_THREAD"
rc=0; run 0 monitor monitor-a-sql OCF_RESKEY_CRM_meta_interval=1000 || rc=$?
[ "$rc" -eq 1 ] || fail "monitor with the SQL thread stopped: rc $rc, want 1 (OCF_ERR_GENERIC)"
reason_sql=$(grep -o 'replication SQL thread [^"]*' "$work/ha.log" | tail -n 1)
[ -n "$reason_sql" ] || fail "no exit reason naming the SQL thread"
# a cold start, no instance promoted anywhere: waiting for the election is no failure
echo "" >"$NIB_STUB_STATE/promoted"
rc=0; run 0 monitor monitor-a-sql-noprimary OCF_RESKEY_CRM_meta_interval=1000 || rc=$?
rm -f "$NIB_STUB_STATE/promoted"
[ "$rc" -eq 0 ] || fail "monitor with the SQL thread stopped and no primary anywhere: rc $rc, want 0 (nothing to replicate from)"
q 0 "START SLAVE SQL_THREAD; STOP SLAVE IO_THREAD"
rc=0; run 0 monitor monitor-a-io OCF_RESKEY_CRM_meta_interval=1000 || rc=$?
[ "$rc" -eq 1 ] || fail "monitor with the IO thread stopped: rc $rc, want 1"
reason_io=$(grep -o 'replication IO thread No[^"]*' "$work/ha.log" | tail -n 1)
[ -n "$reason_io" ] || fail "no exit reason naming the IO thread"
q 0 "START SLAVE IO_THREAD"
wait_for 30 "replication on controller01" 'replicating 0'
# the primary unreachable: Connecting, passed for NIB_IO_CONNECTING_MAX seconds, then failed
q 0 "STOP SLAVE; CHANGE MASTER TO MASTER_PORT=3399, MASTER_CONNECT_RETRY=1; START SLAVE"
wait_for 30 "the IO thread Connecting" '[ "$(slave_field 0 Slave_IO_Running)" = Connecting ]'
rc=0; run 0 monitor monitor-a-connecting OCF_RESKEY_CRM_meta_interval=1000 NIB_IO_CONNECTING_MAX=3 || rc=$?
[ "$rc" -eq 0 ] || fail "monitor with the IO thread Connecting (within the bound): rc $rc, want 0"
sleep 3.5
rc=0; run 0 monitor monitor-a-connecting2 OCF_RESKEY_CRM_meta_interval=1000 NIB_IO_CONNECTING_MAX=3 || rc=$?
[ "$rc" -eq 1 ] || fail "monitor with the IO thread Connecting past the bound: rc $rc, want 1"
reason_conn=$(grep -o 'replication IO thread Connecting to [^"]* for [^"]*' "$work/ha.log" | tail -n 1)
[ -n "$reason_conn" ] || fail "no exit reason for the Connecting IO thread"
echo "5. monitor fails: '$reason_sql' | '$reason_io' | '$reason_conn'"

# --- 6. a primary stopped without a demote (a failed demote; pacemaker
#     stops it anyway), a commit waiting for a replica (controller01 no
#     longer replicates from it): the commit is not acknowledged either
[ "$(status_var 1 Rpl_semi_sync_master_clients)" = 0 ] || fail "controller02 still has a semi-sync replica"
commit 1 501; p=$cpid
sleep 1
[ -z "$(answer 501)" ] || fail "commit 501 answered without a replica: $(answer 501)"
t_stop=$(now_ms)
must 1 stop stop-b-primary
wait "$p" || true
[[ $(answer 501) == ERR* ]] || fail "commit 501 on a primary stopped while it waited for a replica: $(answer 501)"
echo "6. stop of a primary with a commit waiting: $(($(now_ms) - t_stop)) ms; commit 501: $(answer 501)"

pw=$(cat "$pwfile")
for f in "$work"/out/* "$work/ha.log" "$work/ha-debug.log"; do
    [ -e "$f" ] || continue
    if grep -qF -- "$pw" "$f"; then fail "the replication password is in ${f#"$work"/}"; fi
done
echo "ocf:nib:mariadb split passed"
