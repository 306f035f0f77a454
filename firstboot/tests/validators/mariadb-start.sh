#!/bin/bash
# Start the real mariadbd with a node's rendered config and init_file, in a
# private network and mount namespace (the node's cluster address on lo,
# the rendered /etc/mysql bind-mounted), then check what the init SQL made:
# the replication accounts, secure defaults, nothing binlogged, and that the
# agent's account can flip read_only over the socket. Started twice: the
# init file must be idempotent. Usage: mariadb-start.sh GOLDEN_NODE_DIR ADDRESS PASSWORD_FILE
set -euo pipefail
golden=$1 addr=$2 pwfile=$3
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
ip link set lo up
ip addr add "$addr/32" dev lo
mkdir -p "$work/etc"
cp -a "$golden/etc/mysql" "$work/etc/mysql"
mount --bind "$work/etc/mysql" /etc/mysql
mariadb-install-db --no-defaults --user=root --datadir="$work/data" \
    --auth-root-authentication-method=socket --skip-test-db >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; exit 1; }
sock=$work/mysqld.sock
start() {
    mariadbd --defaults-file=/etc/mysql/mariadb.conf.d/60-nib.cnf --user=root \
        --datadir="$work/data" --socket="$sock" --pid-file="$work/mysqld.pid" \
        --log-error="$work/error.log" &
    pid=$!
    for _ in $(seq 100); do
        [ -S "$sock" ] && mariadb -S "$sock" -e 'SELECT 1' >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "mariadbd did not start:"; cat "$work/error.log"; exit 1
}
stop() { mariadb-admin -S "$sock" shutdown; wait "$pid" || true; pid=; }
q() { mariadb -S "$sock" -N -B -e "$1"; }
start
stop
start   # the init file runs again: must not fail
users=$(q "SELECT CONCAT(user,'@',host) FROM mysql.user ORDER BY 1" | tr '\n' ' ')
echo "users: $users"
for want in nib_repl@localhost nib_repl@198.18.0.11 nib_repl@198.18.0.12 root@localhost; do
    [[ " $users " == *" $want "* ]] || { echo "missing account $want"; exit 1; }
done
[[ " $users " != *" @"* ]] || { echo "anonymous account present"; exit 1; }
[[ "$users" != *"root@127.0.0.1"* && "$users" != *"root@::1"* ]] || { echo "root over TCP present"; exit 1; }
[ -z "$(q "SHOW DATABASES LIKE 'test'")" ] || { echo "test database present"; exit 1; }
[ "$(q 'SELECT @@server_id')" = "$(sed -n 's/^server_id = //p' /etc/mysql/mariadb.conf.d/60-nib.cnf)" ]
[ "$(q 'SELECT @@log_bin')" = 1 ] || { echo "binlog off"; exit 1; }
if q "SHOW BINLOG EVENTS" | grep -qiE 'CREATE USER|GRANT|DROP USER'; then echo "init SQL was binlogged"; exit 1; fi
# the agent's operations, as the replication user over the socket
pw=$(cat "$pwfile")
MYSQL_PWD=$pw mariadb -S "$sock" -u nib_repl -e 'SET GLOBAL read_only=ON; SHOW SLAVE STATUS; SET GLOBAL read_only=OFF; SHOW PROCESSLIST' >/dev/null
# over TCP from the peer's account (replication, and the reads a re-seed needs)
MYSQL_PWD=$pw mariadb -h "$addr" -u nib_repl -e 'SHOW GRANTS' | grep -q 'REPLICATION SLAVE'
stop
echo "mariadbd accepted the config and init file (started twice)"
