#!/usr/bin/env bash
# Client-visible stall when a partition's primary fails, on a 3-node ringkv
# cluster: builds kvnode (with the `chaos` build tag, as test/chaos does, so
# that links can be cut), kvctl and grpcurl (pinned, into bin/tools), starts
# three nodes on free 127.0.0.1 ports, and runs REPEATS rounds of each fault
# in FAULTS, interleaved (round 1 kill, round 1 isolate, round 2 kill, ...).
# Nodes are stopped by PID on exit, however the script exits.
#
# A round: the victim is n2 or n3 (in turn), once it is the primary of at
# least one partition and every partition has a primary. A closed-loop client
# load runs against n1 for PRE_SECONDS + WINDOW_SECONDS:
#   kvctl bench --workload W --write-consistency strong --clients CLIENTS
#               --keys KEYS --retry 60s --latency-log FILE
# (strong puts of 100-byte values to random keys; each worker sends its next
# put when the last one succeeded). After PRE_SECONDS the victim is
#   kill:    killed with SIGKILL; restarted after the load ends;
#   isolate: cut off from both replicas through the chaos build's Chaos
#            service (its Raft transport fails every call to the others and
#            theirs to it; clients still reach every node); healed after
#            WINDOW_SECONDS, when the load ends.
# The fault's time is t0, the window [t0, t0 + WINDOW_SECONDS].
#
# What is measured: a request's latency runs from its first send until it
# succeeded, including the Go client's own retries and backoff (NotPrimary,
# an unreachable node; 20 ms doubling to 250 ms) and, under --retry, the
# load's repeats of a put that failed (10 ms after each failure, the same key
# and value): what a caller that repeats a failed write until it succeeds
# waits. Per round:
#   - worst stall: the longest latency of any request in flight at some time
#     within the window (sent before t0 + WINDOW_SECONDS, answered after
#     t0); a request blocked for over 1 s when an isolated victim was healed
#     is counted as "cut short" (its stall would have been longer);
#   - the latencies of all those requests (p50, p99);
#   - failover as n1 sees it: for each partition the victim led, the time
#     until n1's `kvctl status` (polled every 100 ms) names another primary.
# Before the faults, STEADY_SECONDS of a saturating load (64 clients, fast
# puts) count the elections the timing causes without any fault: the rise of
# the partitions' terms summed (n1's `kvctl status`), once the terms held
# still for 6 s; the balancer's hand-back after a spurious election is a
# term too.
# At the end, for each fault and for all rounds together: p50, p99 and max
# of the per-round worst stalls (nearest rank: with fewer than 100 rounds the
# p99 is the largest but one at most, the max below it), and of all request
# latencies in the windows pooled.
#
# Env: REPEATS (rounds per fault, default 5), FAULTS (default "kill
# isolate"), CLIENTS (default 16), KEYS (default 10000), PRE_SECONDS
# (default 2), WINDOW_SECONDS (default 6), STEADY_SECONDS (default 20; 0:
# skip), KVNODE_FLAGS (extra kvnode flags,
# e.g. "--heartbeat-timeout 500ms --election-timeout 500ms"), NO_BUILD=1 to
# use the binaries already in bin/ (bin/kvnode-chaos, bin/kvctl).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-cluster.sh
source scripts/bench-cluster.sh

REPEATS=${REPEATS:-5}
FAULTS=${FAULTS:-kill isolate}
CLIENTS=${CLIENTS:-16}
KEYS=${KEYS:-10000}
PRE_SECONDS=${PRE_SECONDS:-2}
WINDOW_SECONDS=${WINDOW_SECONDS:-6}
STEADY_SECONDS=${STEADY_SECONDS:-20}
GRPCURL_VERSION=v1.9.3
GRPCURL=bin/tools/grpcurl-$GRPCURL_VERSION/grpcurl
KVNODE=bin/kvnode-chaos

install_tools() {
	command -v jq >/dev/null || {
		# As bench-vs-etcd.sh: say what is missing rather than let apt-get
		# fail on a lock file.
		[[ $(id -u) == 0 ]] || { echo "need root to apt-get install jq" >&2; exit 1; }
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends jq
	}
	[[ -x $GRPCURL ]] || GOBIN="$PWD/${GRPCURL%/*}" CGO_ENABLED=0 \
		go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
	if [[ -z "${NO_BUILD:-}" ]]; then
		mkdir -p bin
		CGO_ENABLED=0 go build -tags chaos -o "$KVNODE" ./cmd/kvnode
		CGO_ENABLED=0 go build -o bin/kvctl ./cmd/kvctl
	fi
}

# ringkv_start_node I DIR: as in bench-cluster.sh, with the chaos build.
ringkv_start_node() {
	local i=$1 dir=$2
	mkdir -p "$dir/n$i"
	# shellcheck disable=SC2086 # KVNODE_FLAGS is a list of flags
	"$KVNODE" --id "n$i" --listen "127.0.0.1:${RINGKV_PORTS[i - 1]}" --data-dir "$dir/n$i" \
		--peers "$RINGKV_PEERS" --log-level warn ${KVNODE_FLAGS:-} >>"$dir/n$i.log" 2>&1 &
	RINGKV_PIDS[i - 1]=$!
}

# led_by NODE prints the partitions whose primary is NODE, as n1 sees them.
led_by() {
	bin/kvctl --addr "$RINGKV_ADDR" status --json --timeout 300ms 2>/dev/null |
		jq -r --arg n "$1" '.partitions[] | select(.primary == $n) | .partition'
}

# primaries prints "partition primary" per partition, as n1 sees them.
primaries() {
	bin/kvctl --addr "$RINGKV_ADDR" status --json --timeout 300ms 2>/dev/null |
		jq -r '.partitions[] | "\(.partition) \(.primary // "")"'
}

# terms prints the sum over partitions of the highest term a replica
# reports, as n1 sees them.
terms() {
	bin/kvctl --addr "$RINGKV_ADDR" status --json --timeout 2s | jq '[.partitions[] | [.replicas[].term] | max] | add'
}

# steady runs STEADY_SECONDS of 64-client fast puts and prints the elections
# they saw.
steady() {
	local before after
	((STEADY_SECONDS > 0)) || return 0
	# The balancer hands partitions to their preferred primaries (each
	# hand-off is a new term) every --balance-interval (5 s): start once
	# the terms held still for 6 s.
	before=$(terms) after=""
	local deadline=$((SECONDS + 60))
	while [[ "$before" != "$after" ]] && ((SECONDS < deadline)); do
		after=$before
		sleep 6
		before=$(terms)
	done
	bin/kvctl --addr "$RINGKV_ADDR" bench --workload W --write-consistency fast --clients 64 --keys "$KEYS" \
		--duration "${STEADY_SECONDS}s" --json >"$BENCH_TMP/steady.json" 2>/dev/null &
	BENCH_PID=$!
	wait "$BENCH_PID" || true
	BENCH_PID=""
	after=$(terms)
	echo "steady load, 64 clients, fast puts for $STEADY_SECONDS s: $(jq -r '"\(.run.throughput | floor) puts/s (\(.run.errors) failed)"' "$BENCH_TMP/steady.json"), $((after - before)) elections (partition terms $before -> $after); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# ready_with_victim V: every partition has a primary and nV leads one.
ready_with_victim() {
	ringkv_ready && [[ -n "$(led_by "n$1")" ]]
}

# block I ADDR...: node nI's Raft transport fails every call to ADDRs (none:
# heals it).
block() {
	local i=$1 addrs
	shift
	addrs=$(printf '%s\n' "$@" | jq -R . | jq -sc '{blocked_addrs: map(select(. != ""))}')
	"$GRPCURL" -plaintext -max-time 2 -import-path proto -proto ringkv/v1/chaos.proto -d "$addrs" \
		"127.0.0.1:${RINGKV_PORTS[i - 1]}" ringkv.v1.Chaos/Partition >/dev/null
}

# isolate V cuts nV off from the other two nodes, both ways; heal undoes it.
isolate() {
	local v=$1 i others=()
	for i in 1 2 3; do ((i == v)) || others+=("127.0.0.1:${RINGKV_PORTS[i - 1]}"); done
	block "$v" "${others[@]}"
	for i in 1 2 3; do ((i == v)) || block "$i" "127.0.0.1:${RINGKV_PORTS[v - 1]}"; done
}
heal() {
	local i
	for i in 1 2 3; do block "$i" ""; done
}

# now_us prints the wall clock in µs since the epoch.
now_us() { echo "${EPOCHREALTIME/./}"; }

# window_stats LOG T0_US T1_US [HEAL_US] reads a --latency-log and prints
# "n p50 p99 worst worst_op worst_attempts failed cut_short" (latencies in s)
# over the requests in flight within [T0, T1]; it appends their latencies
# to $BENCH_TMP/all-$FAULT.
window_stats() {
	local log=$1 t0=$2 t1=$3 heal=${4:-0} sel="$BENCH_TMP/selected"
	# Start and latency are in ns; t0, t1 and heal in µs.
	awk -v t0="$t0" -v t1="$t1" -v heal="$heal" '
		BEGIN { t0 += 0; t1 += 0; heal += 0 }
		{ s = $1 / 1000; e = s + $2 / 1000 }
		s < t1 && e > t0 { printf "%.6f %s %s %s %d\n", $2 / 1e9, $3, $4, $5, (heal > 0 && e >= heal && s < heal - 1e6) }
	' "$log" | sort -g >"$sel"
	cut -d' ' -f1 "$sel" >>"$BENCH_TMP/all-$FAULT"
	awk "$RANK"'
		{ v[++n] = $1; if ($3 != "ok") failed++; cut += $5; op = $2; att = $4 }
		END {
			if (n == 0) { print "0 0 0 0 - 0 0 0"; exit }
			printf "%d %.3f %.3f %.3f %s %d %d %d\n", n, v[rank(0.5, n)], v[rank(0.99, n)], v[n], op, att, failed, cut
		}' "$sel"
}

# RANK is an awk function: the nearest rank of quantile q among n values.
RANK='function rank(q, n,   i) { i = int(q * n); return i < q * n ? i + 1 : (i < 1 ? 1 : i) }'

# pct_line FILE... prints "n p50 p99 max" of the numbers in the FILEs.
pct_line() {
	cat "$@" | sort -g | awk "$RANK"'{ v[++n] = $1 }
		END { if (n == 0) { print "0 - - -"; exit }
			printf "%d %.3f %.3f %.3f\n", n, v[rank(0.5, n)], v[rank(0.99, n)], v[n] }'
}

# round R FAULT runs one measured fault and prints its line.
round() {
	local r=$1 victim=$(($1 % 2 + 2)) parts=() bpid t0 t1 heal_us=0 log
	FAULT=$2
	log="$BENCH_TMP/lat-$r-$FAULT"
	wait_until "n$victim leads no partition" "$BENCH_TMP" "${RINGKV_PIDS[*]}" ready_with_victim "$victim"
	mapfile -t parts < <(led_by "n$victim")
	local load
	load=$(cut -d' ' -f1 /proc/loadavg)
	bin/kvctl --addr "$RINGKV_ADDR" bench --workload W --write-consistency strong --clients "$CLIENTS" \
		--keys "$KEYS" --duration "$((PRE_SECONDS + WINDOW_SECONDS))s" --retry 60s --latency-log "$log" \
		--json >"$log.json" 2>/dev/null &
	bpid=$! BENCH_PID=$!
	sleep "$PRE_SECONDS"
	t0=$(now_us)
	case $FAULT in
	kill)
		kill -KILL "${RINGKV_PIDS[victim - 1]}"
		wait "${RINGKV_PIDS[victim - 1]}" 2>/dev/null || true
		;;
	isolate) isolate "$victim" ;;
	*)
		echo "unknown fault $FAULT (want kill or isolate)" >&2
		exit 2
		;;
	esac
	t1=$((t0 + WINDOW_SECONDS * 1000000))
	# Failover as n1 sees it, until every partition moved or the window ends.
	local -A moved=()
	local p primary now
	while ((${#moved[@]} < ${#parts[@]})) && (($(now_us) < t1)); do
		now=$(now_us)
		while read -r p primary; do
			if [[ " ${parts[*]} " == *" $p "* && -z "${moved[$p]:-}" && -n "$primary" && "$primary" != "n$victim" ]]; then
				moved[$p]=$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
			fi
		done < <(primaries)
		sleep 0.1
	done
	local rest=$(((t1 - $(now_us)) / 1000))
	((rest <= 0)) || sleep "$(awk -v ms="$rest" 'BEGIN { printf "%.3f", ms / 1000 }')"
	if [[ $FAULT == isolate ]]; then
		heal_us=$(now_us)
		heal
	fi
	wait "$bpid" || true
	BENCH_PID=""
	[[ $FAULT != kill ]] || ringkv_start_node "$victim" "$BENCH_TMP"
	local n p50 p99 worst wop watt failed cut
	read -r n p50 p99 worst wop watt failed cut < <(window_stats "$log" "$t0" "$t1" "$heal_us")
	echo "$worst" >>"$BENCH_TMP/worst-$FAULT"
	local note=""
	((failed == 0)) || note+=", $failed FAILED after 60 s of retries"
	((cut == 0)) || note+=", $cut cut short by the heal (stall at least that long)"
	printf '%-7s round %d: n%d, primary of %2d partitions, load %5s: worst stall %6.3f s (%s, %d attempts); %4d requests in the window, p50 %.3f s, p99 %.3f s; n1 names a new primary after (s) %s%s\n' \
		"$FAULT" "$r" "$victim" "${#parts[@]}" "$load" "$worst" "$wop" "$watt" "$n" "$p50" "$p99" \
		"$(printf '%s\n' "${moved[@]}" | sort -n | tr '\n' ' ')" "$note"
	unset moved
}

main() {
	local r f
	install_tools
	NO_BUILD=1 bench_init
	BENCH_PID=""
	trap 'stop_pids $BENCH_PID; ringkv_stop; rm -rf "$BENCH_TMP"' EXIT
	ringkv_start "$BENCH_TMP"
	echo "client-visible stall, $REPEATS rounds of: $FAULTS; flags: ${KVNODE_FLAGS:-(defaults)}; $CLIENTS clients, strong puts, window ${WINDOW_SECONDS} s; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
	steady
	for ((r = 1; r <= REPEATS; r++)); do
		for f in $FAULTS; do round "$r" "$f"; done
	done
	echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
	printf '%-8s %-38s %s\n' fault "worst stall per round, s: n p50 p99 max" "all requests in the windows, s: n p50 p99 max"
	local worst=() all=()
	for f in $FAULTS; do
		printf '%-8s %-38s %s\n' "$f" "$(pct_line "$BENCH_TMP/worst-$f")" "$(pct_line "$BENCH_TMP/all-$f")"
		worst+=("$BENCH_TMP/worst-$f") all+=("$BENCH_TMP/all-$f")
	done
	printf '%-8s %-38s %s\n' all "$(pct_line "${worst[@]}")" "$(pct_line "${all[@]}")"
}

main "$@"
