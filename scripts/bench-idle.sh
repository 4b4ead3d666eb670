#!/usr/bin/env bash
# Idle CPU of a 3-node ringkv cluster: builds kvnode and kvctl, starts three
# nodes on free 127.0.0.1 ports, waits until every partition has a primary,
# lets it settle for WARMUP seconds, then reads each node's utime+stime from
# /proc over SECONDS_MEASURED seconds and prints cores used per node and in
# total. Repeats REPEATS times on the same cluster. Nodes are stopped by PID
# on exit.
#
# Env: WARMUP (default 8), SECONDS_MEASURED (default 10), REPEATS (default 3),
# KVNODE_FLAGS (extra kvnode flags, e.g. "--partitions 64"), NO_BUILD=1 to use
# the binaries already in bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-cluster.sh
source scripts/bench-cluster.sh

WARMUP=${WARMUP:-8}
SECONDS_MEASURED=${SECONDS_MEASURED:-10}
REPEATS=${REPEATS:-3}

main() {
	local hz i r
	bench_init
	ringkv_start "$BENCH_TMP"
	hz=$(getconf CLK_TCK)
	sleep "$WARMUP"
	echo "idle CPU, 3 nodes, flags: ${KVNODE_FLAGS:-(defaults)}; ${SECONDS_MEASURED} s per run; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
	for ((r = 1; r <= REPEATS; r++)); do
		local before after
		mapfile -t before < <(cpu_ticks "${RINGKV_PIDS[@]}")
		sleep "$SECONDS_MEASURED"
		mapfile -t after < <(cpu_ticks "${RINGKV_PIDS[@]}")
		local line="run $r:" total=0
		for i in 0 1 2; do
			local d=$((after[i] - before[i]))
			total=$((total + d))
			line+=" n$((i + 1)) $(awk -v d="$d" -v hz="$hz" -v s="$SECONDS_MEASURED" 'BEGIN { printf "%.3f", d / hz / s }')"
		done
		echo "$line total $(awk -v d="$total" -v hz="$hz" -v s="$SECONDS_MEASURED" 'BEGIN { printf "%.3f", d / hz / s }') cores"
	done
}

main "$@"
