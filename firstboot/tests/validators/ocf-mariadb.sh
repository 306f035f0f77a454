#!/bin/bash
# Single-quoted $(...) are on purpose (sh -c, wait_for conditions):
# shellcheck disable=SC2016
# ocf:nib:mariadb (firstboot/ocf/mariadb) against three real mariadbd, with
# pacemaker's tools replaced by ocf-stub.sh. Run by tests/ocf_agent.rs as
# PID 1 of private PID and mount namespaces (everything started here dies
# with it); the four network namespaces are made and deleted by the caller.
#
# controller01 (198.18.0.11) is the primary; controller02 (.12) and a third
# node (.13) are semi-sync GTID replicas, all started by the agent's start
# and controller01 promoted by it, as pacemaker would. Then, with both
# replicas' SQL threads held back by MASTER_DELAY (rows received and
# acknowledged, not applied), controller01's link goes down and its mariadbd
# is SIGKILLed. The third node is promoted by the heartbeat agent (the
# control: it must lose rows, else the test proves nothing), controller02
# by ocf:nib:mariadb, which must keep every acknowledged row although the
# apply ends seconds after its IO thread is gone.
#
# Throughout, no command line may hold the replication password: every
# mysql client call of the agents goes through the stub (which logs its
# arguments), and a sampler reads every process's /proc/PID/cmdline (this
# PID namespace holds them all) every ~20 ms. The control shows that both
# see it where the heartbeat agent puts it.
#
# Usage: ocf-mariadb.sh AGENT GOLDEN_DIR PASSWORD_FILE NETNS_A NETNS_B NETNS_C NETNS_SWITCH
set -euo pipefail
agent=$1 golden=$2 pwfile=$3
ns=("$4" "$5" "$6") switch=$7
heartbeat=/usr/lib/ocf/resource.d/heartbeat/mariadb
here=$(cd "$(dirname "$0")" && pwd)
names=(controller01 controller02 controller03)
addrs=(198.18.0.11 198.18.0.12 198.18.0.13)
ROWS=20
pw=$(cat "$pwfile")

work=$(mktemp -d /tmp/nib-ocf.XXXXXX)
# mariadbd runs as mysql (mysqld_safe, as on a node): it must reach its dirs
chmod 0755 "$work"
bg_pids=()

# shellcheck source=ocf-lib.sh
. "$here/ocf-lib.sh"
trap cleanup EXIT

# --- network: each node's eth0 on a bridge in the switch namespace
ip -n "$switch" link add br0 type bridge
ip -n "$switch" link set br0 up
for i in 0 1 2; do
    ip -n "${ns[$i]}" link set lo up
    ip -n "${ns[$i]}" link add eth0 type veth peer name "p$i" netns "$switch"
    ip -n "${ns[$i]}" addr add "${addrs[$i]}/24" dev eth0
    ip -n "${ns[$i]}" link set eth0 up
    ip -n "$switch" link set "p$i" master br0 up
done

# --- nodes: nib's rendered config and init SQL, a datadir as first boot makes it
mkdir -p "$work/out" "$work/state" "$work/rsctmp" "$work/stubs"
install_seed
for i in 0 1 2; do
    d=$work/n$i
    mkdir -p "$d"
    cp -a "$work/seed" "$d/data"
    g=$golden/${names[$i]}
    [ "$i" -eq 2 ] && g=$golden/controller02
    sed -e "s|^init_file = .*|init_file = $d/nib-init.sql|" \
        -e "s|^server_id = .*|server_id = $((i + 1))|" \
        "$g/etc/mysql/mariadb.conf.d/60-nib.cnf" >"$d/my.cnf"
    install -m 0640 -g mysql "$g/etc/mysql/nib-init.sql" "$d/nib-init.sql"
    node_tmpdir "$i"
    chown mysql:mysql "$d"
done

# --- pacemaker's tools
for t in crm_attribute crm_master attrd_updater crm_node pacemakerd systemctl \
    cibadmin crm_mon crm_resource crm_failcount crm_standby stonith_admin mysql \
    corosync-cmapctl corosync-quorumtool; do
    ln -s "$here/ocf-stub.sh" "$work/stubs/$t"
done
export NIB_STUB_STATE=$work/state
# where controller01 replicates from (the agent's documented node attribute)
printf '%s' "${addrs[0]}" >"$NIB_STUB_STATE/mariadb_mysql_master_IP@controller01"

# run I SCRIPT ACTION NAME [VAR=VALUE...] (ocf_run)
run() { ocf_run "$@"; }
stub_scores() { grep -E '(crm_attribute .*(-p|--promotion)|crm_master).* -v ' "$work/out/$1.stub" || true; }

# --- the command-line sampler: PHASE is "nib" while only ocf:nib:mariadb
#     and this script run, "control" around the heartbeat agent's promote.
#     A sample counts for the phase it was taken in only if the phase was
#     the same before and after it. Hits are recorded as "PID comm". The
#     phase file is replaced by rename, so a read never sees it half written.
phase() { echo "$1" >"$work/phase.new" && mv "$work/phase.new" "$work/phase"; }
phase nib
mkfifo "$work/tick"
argv_sampler() {
    local before after hits f samples=0
    exec 9<>"$work/tick" # never written: read -t on it is a sleep without a fork
    while [ ! -e "$work/sampler.stop" ]; do
        read -r before <"$work/phase" || before=""
        hits=$(grep -lF -f "$pwfile" /proc/[0-9]*/cmdline 2>/dev/null || true)
        read -r after <"$work/phase" || after=""
        samples=$((samples + 1))
        for f in $hits; do
            f=${f%/cmdline}
            if [ -n "$before" ] && [ "$before" = "$after" ]; then
                echo "${f#/proc/} $(cat "$f/comm" 2>/dev/null)" >>"$work/argv-hits.$before"
            fi
        done
        read -r -t 0.02 -u 9 _ || true
    done
    echo "$samples" >"$work/argv-samples"
}
argv_sampler &
sampler=$!
bg_pids+=("$sampler")

# --- controller01: start (no primary yet), monitor, promote
t0=${EPOCHREALTIME/./}
rc=0; run 0 "$agent" start start-a || rc=$?
[ "$rc" -eq 0 ] || fail "start on controller01: rc $rc"
# (no bound asserted: a busy machine is slow; the heartbeat agent's own
# wait would end on one of its 2 s polls)
t=$((${EPOCHREALTIME/./} - t0))
printf 'start: controller01 took %d.%02d s\n' $((t / 1000000)) $((t % 1000000 / 10000))
grep -qx 'controller01 systemctl start nib-datadir.service' "$work/out/start-a.stub" ||
    fail "start did not run 'systemctl start nib-datadir.service' first"
# the primary's replicas' semi-sync acks must not time out on a busy
# machine: every row below must be acknowledged (the nib config waits a
# year; 60 s is as good here and ends a hung run sooner)
q 0 "SET GLOBAL rpl_semi_sync_master_timeout = 60000"
# the third node's replication account (the rendered init SQL knows two)
# (on stdin: the password is on no command line, this script's included)
mariadb -S "$work/n0/mysqld.sock" <<<"SET sql_log_bin = 0; CREATE USER 'nib_repl'@'198.18.0.13' IDENTIFIED BY '$pw'; GRANT REPLICATION SLAVE ON *.* TO 'nib_repl'@'198.18.0.13'"
rc=0; run 0 "$agent" monitor monitor-noreplication OCF_RESKEY_CRM_meta_interval=1000 || rc=$?
[ "$rc" -eq 0 ] || fail "monitor on the unpromoted controller01: rc $rc, want 0"
[ -z "$(stub_scores monitor-noreplication)" ] ||
    fail "monitor set a promotion score on a node without replication: $(stub_scores monitor-noreplication)"
rc=0; run 0 "$agent" promote promote-a || rc=$?
[ "$rc" -eq 0 ] || fail "promote on controller01: rc $rc"
[ "$(q 0 'SELECT @@read_only')" = 0 ] || fail "controller01 read-only after promote"

# --- the replicas: started as pacemaker starts them next to a primary
rc=0; run 2 "$agent" start start-c-failing NIB_STUB_SYSTEMCTL_FAIL=1 \
    OCF_RESKEY_CRM_meta_notify_master_uname=controller01 || rc=$?
[ "$rc" -ne 0 ] || fail "start succeeded although nib-datadir.service failed"
[ ! -e "$work/n2/mysqld.pid" ] || fail "mariadbd started although nib-datadir.service failed"
run 1 "$agent" start start-b OCF_RESKEY_CRM_meta_notify_master_uname=controller01 &
sb=$!
run 2 "$agent" start start-c OCF_RESKEY_CRM_meta_notify_master_uname=controller01 &
sc=$!
rc=0; wait "$sb" || rc=$?
[ "$rc" -eq 0 ] || fail "start on controller02: rc $rc"
rc=0; wait "$sc" || rc=$?
[ "$rc" -eq 0 ] || fail "start on controller03: rc $rc"
replicating() { [ "$(slave_field "$1" Slave_IO_Running)" = Yes ] && [ "$(slave_field "$1" Slave_SQL_Running)" = Yes ]; }
wait_for 30 "replication on controller02" 'replicating 1'
wait_for 30 "replication on controller03" 'replicating 2'
wait_for 30 "two semi-sync replicas on controller01" \
    '[ "$(status_var 0 Rpl_semi_sync_master_clients)" = 2 ]'

# --- monitor: recurring on a healthy replica sets 50; a probe sets nothing
rc=0; run 1 "$agent" monitor monitor-b OCF_RESKEY_CRM_meta_interval=1000 || rc=$?
[ "$rc" -eq 0 ] || fail "monitor on the replica: rc $rc, want 0"
stub_scores monitor-b | grep -qE -- '-v 50( |$)' ||
    fail "monitor on a running replica did not set promotion score 50: $(cat "$work/out/monitor-b.stub")"
rc=0; run 1 "$agent" monitor probe-b OCF_RESKEY_CRM_meta_interval=0 || rc=$?
[ "$rc" -eq 0 ] || fail "probe on the replica: rc $rc, want 0"
[ -z "$(stub_scores probe-b)" ] || fail "a probe set a promotion score: $(stub_scores probe-b)"
echo "monitor: replica score $(stub_scores monitor-b | sed 's/.* -v //'); probe and unreplicated node set none"

# --- rows received but not applied: each replica's SQL thread applies an
#     event only DELAY seconds after the primary wrote it, while its IO
#     thread receives (and acknowledges) it at once. STOP SLAVE ends that
#     wait at once, as it stops an SQL thread working through a backlog
#     after the event at hand (a lock wait, by contrast, holds STOP SLAVE
#     until it ends).
DELAY=12
q 0 "CREATE DATABASE nibtest; CREATE TABLE nibtest.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO nibtest.t VALUES (0)"
for i in 1 2; do
    wait_for 30 "row 0 on ${names[$i]}" '[ "$(q "$i" "SELECT COUNT(*) FROM nibtest.t" 2>/dev/null)" = 1 ]'
    q "$i" "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = $DELAY; START SLAVE"
    wait_for 30 "replication on ${names[$i]}" 'replicating "$i"'
done
wait_for 30 "two semi-sync replicas on controller01" \
    '[ "$(status_var 0 Rpl_semi_sync_master_clients)" = 2 ]'
yes0=$(status_var 0 Rpl_semi_sync_master_yes_tx)
no0=$(status_var 0 Rpl_semi_sync_master_no_tx)
inserts=""
for r in $(seq "$ROWS"); do inserts+="INSERT INTO nibtest.t VALUES ($r);"; done
# autocommit: each INSERT returns once a replica acknowledged it
q 0 "$inserts"
yes1=$(status_var 0 Rpl_semi_sync_master_yes_tx)
no1=$(status_var 0 Rpl_semi_sync_master_no_tx)
[ "$(status_var 0 Rpl_semi_sync_master_status)" = ON ] || fail "semi-sync off on the primary"
if [ $((yes1 - yes0)) -ne "$ROWS" ] || [ "$no1" -ne "$no0" ]; then
    fail "not every row was semi-sync acknowledged: yes_tx +$((yes1 - yes0)), no_tx +$((no1 - no0))"
fi
acked=$((ROWS + 1))
last=$(q 0 'SELECT @@gtid_binlog_pos')
for i in 1 2; do
    wait_for 10 "${names[$i]} to receive $last" '[ "$(slave_field "$i" Gtid_IO_Pos)" = "$last" ]'
    applied=$(q "$i" 'SELECT @@gtid_slave_pos')
    [ "$applied" != "$last" ] || fail "${names[$i]} applied the rows before MASTER_DELAY"
done
echo "acknowledged: $acked rows (semi-sync yes_tx +$ROWS, no_tx +0); replicas received $last, applied $applied"

# --- the primary fails: link down, mariadbd SIGKILLed
ip -n "${ns[0]}" link set eth0 down
kill_node 0 || fail "controller01's mariadbd did not die"

# --- control: the heartbeat agent's promote on the third node
# (its stub log, with the password in its mysql arguments, is kept out of
# $work/out, which must hold the password nowhere)
control_stub=$work/control.stub
phase control
# a canary the sampler must see (the heartbeat agent's mysql calls may all be
# shorter than its period): a process with the password on its command line
(exec -a "nib-canary --password=$pw" sleep 0.5) &
canary=$!
wait "$canary"
rc=0; run 2 "$heartbeat" promote promote-c-heartbeat NIB_STUB_LOG="$control_stub" || rc=$?
phase nib
[ "$rc" -eq 0 ] || fail "heartbeat promote on controller03: rc $rc"
control=$(q 2 'SELECT COUNT(*) FROM nibtest.t')
echo "control (ocf:heartbeat:mariadb promote): $control of $acked acknowledged rows"
[ "$control" -lt "$acked" ] ||
    fail "the heartbeat agent's promote kept all rows: the replicas were not behind, the test proves nothing"

# --- ocf:nib:mariadb's promote on controller02, its SQL thread still
#     DELAY seconds behind: it must wait for the apply, however long that
#     takes, and take writes only after it
(
    # (pacemaker's notify variables: controller01's instance is lost and
    # controller03 is the control, so no other instance is active)
    rc=0; run 1 "$agent" promote promote-b OCF_RESKEY_CRM_meta_notify_active_uname="controller02 " || rc=$?
    echo "$rc" >"$work/promote-b.rc"
) &
pb=$!
bg_pids+=("$pb")
wait_for 30 "controller02's IO thread to stop" '[ "$(slave_field 1 Slave_IO_Running)" = No ]'
early=""
if [ "$(q 1 'SELECT @@gtid_slave_pos')" != "$last" ] && [ "$(q 1 'SELECT @@read_only')" != 1 ]; then
    early="controller02 took writes before applying the relay log (applied $(q 1 'SELECT @@gtid_slave_pos') of $last)"
fi
wait "$pb"
rc=$(cat "$work/promote-b.rc")
[ "$rc" -eq 0 ] || fail "promote on controller02: rc $rc"
kept=$(q 1 'SELECT COUNT(*) FROM nibtest.t')
echo "ocf:nib:mariadb promote: $kept of $acked acknowledged rows"
[ -z "$early" ] || fail "$early"
[ "$kept" -eq "$acked" ] || fail "promote lost $((acked - kept)) acknowledged rows"
[ "$(q 1 'SELECT @@read_only')" = 0 ] || fail "read_only still ON after promote"
# no other instance active: the peer is declared gone, the new primary
# acknowledges alone (semi-sync off) until a replica is back
[ "$(q 1 'SELECT @@rpl_semi_sync_master_enabled')" = 0 ] || fail "semi-sync on, on a new primary whose peer is gone"
stopped() { [ "$(slave_field 1 Slave_IO_Running)" = No ] && [ "$(slave_field 1 Slave_SQL_Running)" = No ]; }
wait_for 10 "replication on the new primary to stop" stopped
grep -qE '^controller02 crm_attribute --type crm_config --name mariadb_REPL_INFO .* -v controller02$' "$work/out/promote-b.stub" ||
    fail "promote did not record controller02 as the primary (REPL_INFO): $(cat "$work/out/promote-b.stub")"
stub_scores promote-b | grep -qE -- '-v 100( |$)' || fail "promote did not set promotion score 100"
[ "$(cat "$NIB_STUB_STATE/promotion-mariadb@controller02")" = 100 ] || fail "controller02's promotion score is not 100"
q 1 "INSERT INTO nibtest.t VALUES (1000)"
echo "new primary: writable, semi-sync off (peer gone), replication stopped, REPL_INFO=controller02, score 100"

# --- the replication password is on no command line of ocf:nib:mariadb's
#     runs: not in the arguments of any mysql client call (the stub logs),
#     nor in any process's /proc/PID/cmdline the sampler read; and the
#     control shows that both would have seen it
touch "$work/sampler.stop"
wait "$sampler"
samples=$(cat "$work/argv-samples")
[ ! -s "$work/argv-hits.nib" ] ||
    fail "a command line held the replication password while ocf:nib:mariadb ran (PID comm): $(sort -u "$work/argv-hits.nib" | tr '\n' ' ')"
grep -q "^$canary " "$work/argv-hits.control" 2>/dev/null ||
    fail "the sampler ($samples samples) never saw the canary's command line: it proves nothing"
sampled_control=$(grep -vc "^$canary " "$work/argv-hits.control" || true)
grep -qF -- "--password=$pw" "$control_stub" ||
    fail "the stub did not log the heartbeat agent's mysql arguments: it proves nothing"
nib_clients=$(cat "$work"/out/*.stub | grep -c '^controller0[0-9] mysql ' || true)
[ "$nib_clients" -gt 0 ] || fail "no mysql client call of ocf:nib:mariadb was logged"
echo "argv: the password on no command line in $samples samples of every process during ocf:nib:mariadb's runs, nor in its $nib_clients mysql client calls; in the control the sampler saw the canary and $sampled_control samples of the heartbeat agent's mysql, the stub $(grep -c -- '--password=' "$control_stub") such calls"

# --- the replication password appears in no output or log
for f in "$work"/out/* "$work/ha.log" "$work/ha-debug.log"; do
    [ -e "$f" ] || continue
    if grep -qF -- "$pw" "$f"; then fail "the replication password is in ${f#"$work"/}"; fi
done
grep -q 'Changing MariaDB configuration to replicate from' "$work/ha.log" ||
    fail "the agents' log is not where the test looks for it"
outs=("$work"/out/*)
echo "password in none of ${#outs[@]} outputs/stub logs, ha.log ($(wc -l <"$work/ha.log") lines), ha-debug.log"
echo "ocf:nib:mariadb passed"
