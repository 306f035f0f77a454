#!/bin/sh
# Run by validators.rs: how long an Erlang node takes to declare a peer
# down once the link between them is cut (no FIN, no RST: a power cut or a
# pulled cable), with the net_ticktime the rendered rabbitmq.conf sets.
# Two plain Erlang VMs (what RabbitMQ's distribution is), each in a network
# namespace of its own joined by a veth, addresses in 198.18.0.0/24, no
# route out; the link is cut at a random point of the tick cycle.
# Argument: net_ticktime in seconds. Prints "nodedown after N ms".
set -eu
t=$1
A=nibtick-$$-a B=nibtick-$$-b
cleanup() {
  for ns in $A $B; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  done
  sleep 0.3
  ip netns del $A 2>/dev/null || true
  ip netns del $B 2>/dev/null || true
}
trap cleanup EXIT
ip netns add $A
ip netns add $B
ip link add tka netns $A type veth peer name tkb netns $B
ip -n $A addr add 198.18.0.201/24 dev tka
ip -n $B addr add 198.18.0.202/24 dev tkb
for x in "$A tka" "$B tkb"; do
  set -- $x
  ip -n "$1" link set "$2" up
  ip -n "$1" link set lo up
done
cookie=nib-tick-$$
# epmd is started by the first VM in each namespace
ip netns exec $B erl -noshell -name b@198.18.0.202 -setcookie "$cookie" \
  -kernel net_ticktime "$t" -eval 'timer:sleep(infinity).' >/dev/null 2>&1 &
sleep 2
ip netns exec $A erl -noshell -name a@198.18.0.201 -setcookie "$cookie" \
  -kernel net_ticktime "$t" -eval '
  B = list_to_atom("b@198.18.0.202"),
  Up = fun Up(0) -> false; Up(N) -> net_kernel:connect_node(B) orelse (timer:sleep(200) == ok andalso Up(N - 1)) end,
  true = Up(25),
  monitor_node(B, true),
  timer:sleep(1000 + rand:uniform(2000)),
  os:cmd("ip link set tka down"),
  T0 = erlang:monotonic_time(millisecond),
  receive {nodedown, B} -> io:format("nodedown after ~p ms~n", [erlang:monotonic_time(millisecond) - T0])
  after 60000 -> io:format("no nodedown within 60 s~n") end,
  halt().'
