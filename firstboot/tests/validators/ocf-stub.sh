#!/bin/bash
# Stand-in for pacemaker's tools in ocf-mariadb.sh, installed under each
# tool's name in the HA_SBIN_DIR (and first in PATH) the agents run with, so
# no real cluster tool is ever called. Every call is logged as one line:
# "<node> <tool> <args>", node = uname -n (each agent run has its own UTS
# namespace). Node attributes (crm_attribute, crm_master, attrd_updater)
# live in files under NIB_STUB_STATE, as pacemaker keeps them in the CIB
# and attrd: a query finds what an earlier call set.
set -u
tool=${0##*/}
node=$(uname -n)
line="$node $tool"
for a in "$@"; do line+=" $a"; done
# one write, so lines of concurrent calls do not mix
printf '%s\n' "$line" >>"$NIB_STUB_LOG"

case $tool in
    crm_node)
        # ocf_local_nodename
        [ "${1:-}" = -n ] && { echo "$node"; exit 0; }
        # quorum (1/0) and the partition's members, as the test sets them
        # in NIB_STUB_STATE/quorate and /partition (default: quorate, both)
        [ "${1:-}" = -q ] && { cat "$NIB_STUB_STATE/quorate" 2>/dev/null || echo 1; exit 0; }
        # (pacemaker's peer cache: ahead of corosync's quorum at a
        # membership change when the test sets NIB_STUB_STATE/cpg)
        [ "${1:-}" = -p ] && { cat "$NIB_STUB_STATE/cpg" 2>/dev/null || cat "$NIB_STUB_STATE/partition" 2>/dev/null || echo "controller01 controller02"; exit 0; }
        exit 1 ;;
    corosync-quorumtool)
        # -s: corosync 3.1's status, from the same quorate and partition
        # files (node ids: controller01 1, controller02 2, as nib numbers
        # them); exit 1 when not quorate
        [ "${1:-}" = -s ] || exit 2
        q=$(cat "$NIB_STUB_STATE/quorate" 2>/dev/null || echo 1)
        members=$(cat "$NIB_STUB_STATE/partition" 2>/dev/null || echo "controller01 controller02")
        printf 'Quorum information\n------------------\nQuorum provider:  corosync_votequorum\nQuorate:          %s\n\n' "$([ "$q" = 1 ] && echo Yes || echo No)"
        printf 'Membership information\n----------------------\n    Nodeid      Votes    Qdevice Name\n'
        for m in $members; do
            printf '         %s          1    A,V,NMW %s%s\n' "${m#controller0}" "$m" "$([ "$m" = "$node" ] && echo ' (local)')"
        done
        printf '         0          1            Qdevice\n'
        [ "$q" = 1 ]
        exit $? ;;
    corosync-cmapctl)
        # -g quorum.device.model: the pair has the arbiter, unless the
        # test says two_node (NIB_STUB_STATE/two_node)
        [ "${1:-}" = -g ] && [ "${2:-}" = quorum.device.model ] || exit 1
        [ -e "$NIB_STUB_STATE/two_node" ] && exit 1
        echo "quorum.device.model (str) = net"
        exit 0 ;;
    crm_resource)
        # --locate: the nodes whose instance is promoted, as the test sets
        # them in NIB_STUB_STATE/promoted (default: both, so that every
        # node sees a primary elsewhere), in pacemaker 2.1's words
        [ "${1:-}" = --locate ] || exit 1
        for n in $(cat "$NIB_STUB_STATE/promoted" 2>/dev/null || echo "controller01 controller02"); do
            echo "resource ${OCF_RESOURCE_INSTANCE:-} is running on: $n Promoted"
        done
        exit 0 ;;
    pacemakerd)
        # ocf_local_nodename reads the version to choose crm_node
        echo "Pacemaker 2.1.5"; exit 0 ;;
    systemctl)
        # ocf:nib:mariadb's start: `systemctl cat UNIT` says the unit exists,
        # `systemctl start UNIT` fails when the test asks for it
        case "${1:-}" in
            cat) exit 0 ;;
            start) [ -z "${NIB_STUB_SYSTEMCTL_FAIL:-}" ]; exit $? ;;
        esac
        exit 1 ;;
    mysql)
        # the agents' mysql client: logged above (the test checks that no
        # argument holds the password), then the real one
        exec /usr/bin/mysql "$@" ;;
    crm_attribute | crm_master | attrd_updater) ;;
    *)
        echo "$tool: not emulated by the test's stub" >&2
        exit 1 ;;
esac

name="" target=$node op="set" value="" quiet=""
[ "$tool" = crm_master ] && name="promotion-${OCF_RESOURCE_INSTANCE:-}"
while [ $# -gt 0 ]; do
    case $1 in
        -n | --name) name=$2; shift ;;
        -N | --node) target=$2; shift ;;
        -v | --update | -U) value=$2; op="set"; shift ;;
        -G | --query | -Q) op="get" ;;
        -D | --delete) op="del" ;;
        -q | --quiet) quiet=1 ;;
        -p | --promotion) name="promotion-${OCF_RESOURCE_INSTANCE:-}" ;;
        --type) [ "$2" = crm_config ] && target=cluster; shift ;;
        -t) [ "$2" = crm_config ] && target=cluster; shift ;;
        -l | --lifetime | -s | --set-name) shift ;;
        *) ;;
    esac
    shift
done
[ -n "$name" ] || { echo "$tool: no attribute name" >&2; exit 64; }
file="$NIB_STUB_STATE/$name@$target"
case $op in
    set) printf '%s' "$value" >"$file" ;;
    del) rm -f "$file" ;;
    get)
        if [ ! -e "$file" ]; then
            echo "$tool: attribute $name on $target does not exist" >&2
            exit 105
        fi
        v=$(cat "$file")
        if [ "$tool" = attrd_updater ]; then
            echo "name=\"$name\" host=\"$target\" value=\"$v\""
        elif [ -n "$quiet" ]; then
            echo "$v"
        else
            echo "scope=nodes  name=$name value=$v"
        fi ;;
esac
exit 0
