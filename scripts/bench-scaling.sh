#!/usr/bin/env bash
# Scaling tables for docs/benchmarks.md, on 3 kvnode processes on free
# 127.0.0.1 ports (data in a temp dir, every process stopped by PID on exit),
# driven by `kvctl bench`. Each table row prints the median of REPEATS runs:
# ops/s (min–max), p50 and p99 in ms, and errors summed over the runs.
#
#   clients     strong put, fast put, local get at 1, 4, 16, 64, 256 clients
#   partitions  strong put (64 clients) and idle CPU at 4, 16, 64 partitions
#   values      strong put (64 clients) with 100 B, 1 KiB, 8 KiB, 64 KiB values
#   memory      n3 stopped, MEMORY_KEYS keys written (100-byte values, strong),
#               resident memory of n1 before and after; then n3 restarted and
#               timed until it has applied everything its primaries committed
#
# Env: TABLES (default "clients partitions values memory"), REPEATS (3),
# ROW_SECONDS (10), KEYS (100000), MEMORY_KEYS (1000000), KVNODE_FLAGS,
# NO_BUILD=1 to use the binaries already in bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-cluster.sh
source scripts/bench-cluster.sh

TABLES=${TABLES:-clients partitions values memory}
REPEATS=${REPEATS:-3}
ROW_SECONDS=${ROW_SECONDS:-10}
KEYS=${KEYS:-100000}
MEMORY_KEYS=${MEMORY_KEYS:-1000000}
declare -A MODE_ARGS=(
	[strong]="--workload W --write-consistency strong"
	[fast]="--workload W --write-consistency fast"
	[local]="--workload C --read-consistency local"
)

# run_once ARGS... prints "ops/s p50_ms p99_ms errors codes" of one measured
# run; codes are the errors by gRPC code, CODE=N separated by commas.
run_once() {
	bin/kvctl bench --json --duration "${ROW_SECONDS}s" "$@" 2>/dev/null |
		jq -r '.run | "\(.throughput) \(.operations[0].latency_us.p50 / 1000) \(.operations[0].latency_us.p99 / 1000) \(.errors) \(.operations[0].errors // {} | to_entries | map("\(.key)=\(.value)") | join(","))"'
}

# summarize reads run_once lines and prints the markdown cells: median ops/s
# (min–max) | median p50 | median p99 | errors (by code).
summarize() {
	sort -n | awk '{ ops[NR] = $1; p50[NR] = $2; p99[NR] = $3; err += $4; if ($5 != "") codes = codes (codes == "" ? "" : ",") $5 }
		function med(a, n,   b, i, j, t) {
			for (i = 1; i <= n; i++) b[i] = a[i]
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (b[j] < b[i]) { t = b[i]; b[i] = b[j]; b[j] = t }
			return n % 2 ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
		}
		END { printf "%.0f (%.0f–%.0f) | %.2f | %.2f | %d%s", med(ops, NR), ops[1], ops[NR], med(p50, NR), med(p99, NR), err, (codes == "" ? "" : " (" codes ")") }'
}

# measure ROWNAME ARGS... runs REPEATS times and prints one table row.
measure() {
	local name=$1 r
	shift
	echo "| $name | $(for ((r = 1; r <= REPEATS; r++)); do run_once "$@"; done | summarize) |"
}

header() {
	echo
	echo "$1 (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	echo
	echo "| $2 | ops/s median (min–max) | p50 ms | p99 ms | errors |"
	echo "|---|---|---|---|---|"
}

table_clients() {
	fresh_cluster
	bin/kvctl bench --load --duration 0 --clients 64 --keys "$KEYS" --value-size 100 >/dev/null 2>&1
	header "clients: \`kvctl bench --keys $KEYS --value-size 100 --duration ${ROW_SECONDS}s --clients N\` + mode flags" "mode, clients"
	local c mode
	for c in 1 4 16 64 256; do
		for mode in strong fast local; do
			# shellcheck disable=SC2086 # MODE_ARGS holds a list of flags
			measure "$mode, $c" ${MODE_ARGS[$mode]} --clients "$c" --keys "$KEYS" --value-size 100
		done
	done
}

table_partitions() {
	header "partitions: \`kvnode --partitions P\`; \`kvctl bench --workload W --write-consistency strong --clients 64 --keys $KEYS --value-size 100 --duration ${ROW_SECONDS}s\`; idle: cores of all 3 nodes over 10 s after 8 s" "partitions"
	local p flags=${KVNODE_FLAGS:-} before after
	for p in 4 16 64; do
		KVNODE_FLAGS="$flags --partitions $p" fresh_cluster
		sleep 8
		before=$(cpu_ticks "${RINGKV_PIDS[@]}" | awk '{ t += $1 } END { print t }')
		sleep 10
		after=$(cpu_ticks "${RINGKV_PIDS[@]}" | awk '{ t += $1 } END { print t }')
		echo "| $p (idle $(awk -v a="$before" -v b="$after" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", (b - a) / hz / 10 }') cores) | $(for ((r = 1; r <= REPEATS; r++)); do run_once --workload W --write-consistency strong --clients 64 --keys "$KEYS" --value-size 100; done | summarize) |"
	done
	KVNODE_FLAGS=$flags
}

table_values() {
	fresh_cluster
	header "values: \`kvctl bench --workload W --write-consistency strong --clients 64 --keys 10000 --duration ${ROW_SECONDS}s --value-size B\`" "value size"
	local v
	for v in 100 1024 8192 65536; do
		measure "$v B" --workload W --write-consistency strong --clients 64 --keys 10000 --value-size "$v"
	done
}

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

table_memory() {
	fresh_cluster
	sleep 3
	local rss0 rss1 t0 t1 n3rss
	rss0=$(rss_kib "${RINGKV_PIDS[0]}")
	stop_pids "${RINGKV_PIDS[2]}"
	t0=$SECONDS
	bin/kvctl bench --load --duration 0 --clients 64 --keys "$MEMORY_KEYS" --value-size 100 >/dev/null 2>&1
	t1=$SECONDS
	sleep 5
	rss1=$(rss_kib "${RINGKV_PIDS[0]}")
	echo
	echo "memory: n3 stopped; \`kvctl bench --load --duration 0 --clients 64 --keys $MEMORY_KEYS --value-size 100\` ($((t1 - t0)) s); load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "n1 resident: $((rss0 / 1024)) MiB before, $((rss1 / 1024)) MiB after: $(awk -v a="$rss0" -v b="$rss1" -v k="$MEMORY_KEYS" 'BEGIN { printf "%.0f", (b - a) * 1024 / k }') bytes per key (raw key+value ≈ $((6 + ${#MEMORY_KEYS} + 100)) B)"
	t0=$EPOCHREALTIME
	ringkv_start_node 3 "$BENCH_TMP/cluster"
	until caught_up 3; do sleep 0.2; done
	n3rss=$(rss_kib "${RINGKV_PIDS[2]}")
	echo "n3 restarted: applied everything committed after $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s (process start included); n3 resident then: $((n3rss / 1024)) MiB"
}

main() {
	local t
	for t in $TABLES; do
		declare -F "table_$t" >/dev/null || { echo "TABLES: unknown table \"$t\", want some of: clients partitions values memory" >&2; exit 2; }
	done
	bench_init
	echo "ringkv $(git describe --always --dirty 2>/dev/null || echo '?'), 3 nodes on 127.0.0.1, $(nproc) cores, flags: ${KVNODE_FLAGS:-(defaults)}; median of $REPEATS"
	for t in $TABLES; do "table_$t"; done
}

main "$@"
