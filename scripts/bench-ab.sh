#!/usr/bin/env bash
# A/B of ringkv builds on this machine: one 3-node cluster per build, all
# alive for the whole script, the ones not being measured paused (SIGSTOP),
# rows interleaved run by run so that a shared machine's drifts hit every
# build alike. Each run prints ops/s, p50, p99 and errors of the row's
# operation, the servers' CPU per operation (utime+stime of the 3 kvnodes
# over the run) and WAL records per sync (from ringkv_wal_batch_records on
# /metrics). Everything listens on free 127.0.0.1 ports, data lives in a temp
# dir, every process is stopped by PID on exit.
#
#   scripts/bench-ab.sh NAME=DIR...    DIR holds bin/kvnode and bin/kvctl of one build
#
# Env: ROWS (`kvctl bench` flags of each row, rows separated by ';'; default
# fast and strong puts), REPEATS (3), ROW_SECONDS (10), CLIENTS (64), KEYS
# (100000, all loaded first), KVNODE_FLAGS (for every build).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-cluster.sh
source scripts/bench-cluster.sh

ROWS=${ROWS:---workload W --write-consistency fast;--workload W --write-consistency strong}
REPEATS=${REPEATS:-3}
ROW_SECONDS=${ROW_SECONDS:-10}
CLIENTS=${CLIENTS:-64}
KEYS=${KEYS:-100000}

declare -A DIR ADDR PIDS METRICS

# start_build NAME starts NAME's cluster, waits for its primaries, loads the
# key space and pauses it.
start_build() {
	local name=$1 dir=${DIR[$1]} ports peers="" i pids=() m=()
	mapfile -t ports < <(free_ports 6)
	for i in 1 2 3; do peers+="${peers:+,}n$i=127.0.0.1:${ports[i - 1]}"; done
	for i in 1 2 3; do
		mkdir -p "$BENCH_TMP/$name/n$i"
		# shellcheck disable=SC2086 # KVNODE_FLAGS is a list of flags
		"$dir/bin/kvnode" --id "n$i" --listen "127.0.0.1:${ports[i - 1]}" --metrics-addr "127.0.0.1:${ports[i + 2]}" \
			--data-dir "$BENCH_TMP/$name/n$i" --peers "$peers" --log-level warn ${KVNODE_FLAGS:-} \
			>"$BENCH_TMP/$name/n$i.log" 2>&1 &
		pids+=($!)
		RINGKV_PIDS+=($!)
		m+=("127.0.0.1:${ports[i + 2]}")
	done
	ADDR[$name]=127.0.0.1:${ports[0]} PIDS[$name]="${pids[*]}" METRICS[$name]="${m[*]}"
	RINGKV_ADDR=${ADDR[$name]} wait_until "$name did not elect a primary for every partition" "$BENCH_TMP/$name" "${pids[*]}" \
		ready "$dir"
	"$dir/bin/kvctl" --addr "${ADDR[$name]}" bench --load --duration 0 --clients 64 --keys "$KEYS" --value-size 100 >/dev/null 2>&1
	# shellcheck disable=SC2086 # a list of PIDs
	kill -STOP ${PIDS[$name]}
}

ready() {
	local out
	out=$("$1/bin/kvctl" --addr "$RINGKV_ADDR" status --timeout 2s) && ! grep -qE '\(none\)|unreachable' <<<"$out"
}

# wal_counts METRICS_ADDR... prints the syncs and records the WALs counted.
wal_counts() {
	local m
	for m in "$@"; do curl -s "http://$m/metrics"; done |
		awk '/^ringkv_wal_batch_records_count/ { c += $2 } /^ringkv_wal_batch_records_sum/ { s += $2 } END { print c + 0, s + 0 }'
}

# run_row NAME FLAGS prints one run of the row on NAME's cluster.
run_row() {
	local name=$1 flags=$2 c0 c1 w0 w1 out
	# shellcheck disable=SC2086 # lists of PIDs and addresses
	{
		kill -CONT ${PIDS[$name]}
		sleep 1.5 # heartbeats resume and leases settle
		c0=$(cpu_ticks ${PIDS[$name]} | awk '{ t += $1 } END { print t }')
		w0=$(wal_counts ${METRICS[$name]})
		out=$("${DIR[$name]}/bin/kvctl" --addr "${ADDR[$name]}" bench --json $flags --clients "$CLIENTS" \
			--keys "$KEYS" --value-size 100 --duration "${ROW_SECONDS}s" 2>/dev/null)
		c1=$(cpu_ticks ${PIDS[$name]} | awk '{ t += $1 } END { print t }')
		w1=$(wal_counts ${METRICS[$name]})
		kill -STOP ${PIDS[$name]}
	}
	jq -r '.run | "\(.throughput | floor) ops/s, p50 \(.operations[0].latency_us.p50 / 10 | floor / 100) ms, p99 \(.operations[0].latency_us.p99 / 10 | floor / 100) ms, \(.errors) errors, \(.ops)"' <<<"$out" |
		awk -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v w0="$w0" -v w1="$w1" '{
			ops = $NF; sub(/, [0-9]+$/, "")
			split(w0, a, " "); split(w1, b, " ")
			printf "%s; server CPU %.0f µs/op; %.1f WAL records/sync\n", $0, c / hz / (ops ? ops : 1) * 1e6, (b[1] > a[1] ? (b[2] - a[2]) / (b[1] - a[1]) : 0)
		}'
}

main() {
	local spec name names=() r row rows
	(($#)) || { echo "usage: scripts/bench-ab.sh NAME=DIR..." >&2; exit 2; }
	for spec in "$@"; do
		name=${spec%%=*}
		[[ "$spec" == *=* && -x "${spec#*=}/bin/kvnode" && -x "${spec#*=}/bin/kvctl" ]] ||
			{ echo "\"$spec\": want NAME=DIR with DIR/bin/kvnode and DIR/bin/kvctl" >&2; exit 2; }
		DIR[$name]=$(cd "${spec#*=}" && pwd)
		names+=("$name")
	done
	BENCH_TMP=$(mktemp -d)
	RINGKV_PIDS=()
	# A stopped process keeps SIGTERM pending: continue everything first.
	trap 'kill -CONT "${RINGKV_PIDS[@]}" 2>/dev/null; ringkv_stop; rm -rf "$BENCH_TMP"' EXIT
	trap 'exit 130' INT TERM
	for name in "${names[@]}"; do start_build "$name"; done
	echo "A/B: ${names[*]}; $CLIENTS clients, $KEYS keys, 100-byte values, ${ROW_SECONDS} s per run; load average $(cut -d' ' -f1-3 /proc/loadavg)"
	IFS=';' read -ra rows <<<"$ROWS"
	for ((r = 1; r <= REPEATS; r++)); do
		for row in "${rows[@]}"; do
			for name in "${names[@]}"; do
				echo "run $r [$row] $name: $(run_row "$name" "$row")"
			done
		done
	done
	echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
}

main "$@"
