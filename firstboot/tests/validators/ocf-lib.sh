# shellcheck shell=bash
# Sourced by ocf-mariadb.sh and ocf-mariadb-split.sh once they have set
# work, names, ns and bg_pids: failing, stopping the nodes and the cleanup,
# the agent run as pacemaker-execd runs it, and queries of the test's
# mariadbd over their sockets.

fail() { echo "FAIL: $*" >&2; exit 1; }
gone() { [ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
mariadbd_pid() { cat "$work/n$1/mysqld.pid" 2>/dev/null || true; }
# mysqld_safe restarts a mariadbd that dies: it goes first
kill_node() {
    local pid ppid
    pid=$(mariadbd_pid "$1")
    [ -n "$pid" ] || return 0
    ppid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    if [ -n "$ppid" ] && grep -q mysqld_safe "/proc/$ppid/cmdline" 2>/dev/null; then
        kill -KILL "$ppid" 2>/dev/null || true
    fi
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 100); do gone "$pid" && return 0; sleep 0.05; done
    return 1
}
# install_seed: one initialised datadir, $work/seed, for the nodes to copy.
# The two agent tests run at once, each in its own PID namespace, so their
# mariadbds get the same small PIDs, and temporary-table names are made from
# them: in a shared /tmp one install removed the other's
# (#sql-temptable-38-1-3, then ERROR 1051). So every mariadbd here gets a
# tmpdir of its own, this install $work/tmp, each node $work/nI/tmp
# (node_tmpdir appends it to the node's my.cnf).
install_seed() {
    mkdir -p "$work/seed" "$work/tmp"
    chown mysql:mysql "$work/seed" "$work/tmp"
    TMPDIR=$work/tmp mariadb-install-db --user=mysql --datadir="$work/seed" \
        --tmpdir="$work/tmp" --auth-root-authentication-method=socket \
        --skip-test-db >"$work/install.log" 2>&1 ||
        { cat "$work/install.log"; exit 1; }
}
# node_tmpdir I: node I's own tmpdir, in its my.cnf (the [mariadb] section
# is the file's only one)
node_tmpdir() {
    mkdir -p "$work/n$1/tmp"
    chown mysql:mysql "$work/n$1/tmp"
    echo "tmpdir = $work/n$1/tmp" >>"$work/n$1/my.cnf"
}
# The EXIT trap: background jobs (bg_pids) and every node's mariadbd
# killed, the logs shown after a failure, $work removed.
cleanup() {
    local rc=$? p i f
    set +e
    for p in "${bg_pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for i in "${!names[@]}"; do kill_node "$i"; done
    for p in "${bg_pids[@]}"; do wait "$p" 2>/dev/null; done
    if [ "$rc" -ne 0 ]; then
        for f in "$work"/n*/mariadb.err "$work"/out/* "$work"/ha.log "$work"/stub.log "$work"/client/*; do
            [ -s "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }
        done
    fi
    rm -rf "$work"
    exit "$rc"
}

# ocf_run I SCRIPT ACTION NAME [VAR=VALUE...]: runs SCRIPT ACTION on node I
# in its network namespace and its own UTS namespace (uname -n = the node
# name), with the environment pacemaker-execd gives an OCF agent (a clone
# of ${#names[@]}, HA_RSCTMP of its own per node). Output in $work/out/NAME,
# stub calls (and mysql client calls) in $work/out/NAME.stub. Extra
# VAR=VALUE arguments come first. The password reaches the agent as
# pacemaker-execd passes it, in the environment: read from its file by the
# last shell before the agent, so it is on no command line on the way either.
ocf_run() {
    local i=$1 script=$2 action=$3 name=$4
    shift 4
    local d=$work/n$i
    mkdir -p "$work/rsctmp/n$i"
    env -i PATH="$work/stubs:/usr/sbin:/usr/bin:/sbin:/bin" LANG=C.UTF-8 \
        OCF_ROOT=/usr/lib/ocf OCF_RA_VERSION_MAJOR=1 OCF_RA_VERSION_MINOR=1 \
        OCF_RESOURCE_INSTANCE=mariadb OCF_RESOURCE_TYPE=mariadb OCF_RESOURCE_PROVIDER=nib \
        OCF_RESKEY_crm_feature_set=3.16.2 OCF_RESKEY_CRM_meta_promotable=true \
        OCF_RESKEY_CRM_meta_clone_max="${#names[@]}" OCF_RESKEY_CRM_meta_notify=true \
        OCF_RESKEY_CRM_meta_timeout=120000 OCF_RESKEY_CRM_meta_interval=0 \
        OCF_RESKEY_binary=/usr/bin/mysqld_safe OCF_RESKEY_config="$d/my.cnf" \
        OCF_RESKEY_datadir="$d/data" OCF_RESKEY_pid="$d/mysqld.pid" \
        OCF_RESKEY_socket="$d/mysqld.sock" OCF_RESKEY_log="$d/mariadb.err" \
        OCF_RESKEY_user=mysql OCF_RESKEY_group=mysql \
        OCF_RESKEY_node_list="${names[*]}" \
        OCF_RESKEY_replication_user=nib_repl NIB_TEST_PWFILE="$pwfile" \
        HA_SBIN_DIR="$work/stubs" HA_RSCTMP="$work/rsctmp/n$i" HA_LOGFACILITY=none \
        HA_LOGFILE="$work/ha.log" HA_DEBUGLOG="$work/ha-debug.log" HA_debug=1 \
        NIB_STUB_STATE="$NIB_STUB_STATE" NIB_STUB_LOG="$work/out/$name.stub" \
        ${NIB_ROLE_DATA:+NIB_ROLE_DATA="$NIB_ROLE_DATA"} \
        "$@" \
        ip netns exec "${ns[$i]}" unshare --uts \
        sh -c 'hostname "$1" && shift &&
            OCF_RESKEY_replication_passwd=$(cat "$NIB_TEST_PWFILE") &&
            export OCF_RESKEY_replication_passwd && unset NIB_TEST_PWFILE &&
            exec "$@"' sh "${names[$i]}" "$script" "$action" \
        </dev/null >"$work/out/$name" 2>&1
}

q() { mariadb -S "$work/n$1/mysqld.sock" -N -B -e "$2"; }
status_var() { q "$1" "SHOW GLOBAL STATUS LIKE '$2'" | cut -f2; }
# (vertical output keeps its field names only without -N)
slave_field() { mariadb -S "$work/n$1/mysqld.sock" -B -e 'SHOW SLAVE STATUS\G' | sed -n "s/^ *$2: //p"; }
# wait_for SECONDS WHAT CONDITION: bounded poll of a shell condition
wait_for() {
    for _ in $(seq $(($1 * 10))); do eval "$3" && return 0; sleep 0.1; done
    fail "timed out after $1 s waiting for $2"
}
