#!/usr/bin/env bash
# Failover time of a 3-node ringkv cluster: builds kvnode and kvctl, starts
# three nodes on free 127.0.0.1 ports, and REPEATS times kills -9 a node
# (n2 and n3 in turn) and prints, for each partition it led, the time until
# n1's `kvctl status` (polled every 50 ms) names another primary. The killed node is then restarted and the next round
# waits until it leads partitions again (--balance-interval). Nodes are
# stopped by PID on exit.
#
# Env: REPEATS (default 3), KVNODE_FLAGS (extra kvnode flags), NO_BUILD=1 to
# use the binaries already in bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-cluster.sh
source scripts/bench-cluster.sh

REPEATS=${REPEATS:-3}

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

main() {
	local r
	bench_init
	ringkv_start "$BENCH_TMP"
	echo "failover after kill -9, flags: ${KVNODE_FLAGS:-(defaults)}; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
	for ((r = 1; r <= REPEATS; r++)); do
		local victim=$((r % 2 + 2)) parts=()
		wait_until "n$victim leads no partition" "$BENCH_TMP" "${RINGKV_PIDS[*]}" test -n "$(led_by "n$victim")"
		mapfile -t parts < <(led_by "n$victim")
		local t0=$EPOCHREALTIME
		kill -KILL "${RINGKV_PIDS[victim - 1]}"
		wait "${RINGKV_PIDS[victim - 1]}" 2>/dev/null || true
		# Each partition's failover time is when n1 first names a new primary.
		local -A moved=()
		local p primary now
		while ((${#moved[@]} < ${#parts[@]})); do
			now=$EPOCHREALTIME
			while read -r p primary; do
				if [[ " ${parts[*]} " == *" $p "* && -z "${moved[$p]:-}" && -n "$primary" && "$primary" != "n$victim" ]]; then
					moved[$p]=$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.2f", b - a }')
				fi
			done < <(primaries)
			sleep 0.05
		done
		echo "run $r: killed n$victim, primary of ${#parts[@]} partitions; new primary after (s, sorted): $(printf '%s\n' "${moved[@]}" | sort -n | tr '\n' ' ')"
		unset moved
		ringkv_start_node "$victim" "$BENCH_TMP"
		wait_until "ringkv did not recover" "$BENCH_TMP" "${RINGKV_PIDS[*]}" ringkv_ready
	done
}

main "$@"
