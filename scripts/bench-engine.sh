#!/usr/bin/env bash
# The storage engine's targets (issue 15) for docs/benchmarks.md, on 3 kvnode
# processes on free 127.0.0.1 ports (data in a temp dir, every process
# stopped by PID on exit), driven by `kvctl bench`.
#
#   growth   strong puts (64 clients, 100-byte values) on a cluster holding
#            N keys, for each N of GROWTH_KEYS: the key space grows by a load
#            (`--load --load-from`, its keys/s reported) between rows, then
#            REPEATS runs of ROW_SECONDS update keys uniformly over all N.
#            Then, on the last N: engine bytes on disk per key against the raw
#            key + value, and a restart of n1, after SIGTERM and after
#            SIGKILL, timed from process start to /readyz answering 200.
#   catchup  n3 stopped while still empty, CATCHUP_KEYS keys written (100
#            bytes), n3 restarted and timed until every replica on it has
#            applied what its primary committed; its peers truncated their
#            logs long before, so it catches up by snapshot.
#   bigdata  each kvnode in a cgroup (v1) whose memory limit is
#            BIG_LIMIT_MIB; BIG_KEYS keys of BIG_VALUE bytes loaded; then
#            every node's peak resident memory, the cgroup's failures and OOM
#            kills, and READBACK_SECONDS of reads of random keys, every one of
#            which must be found. Needs root.
#
# Env: TABLES (default "growth catchup bigdata"), REPEATS (3), ROW_SECONDS
# (10), GROWTH_KEYS ("100000 1000000 3000000 10000000"), CATCHUP_KEYS
# (1000000), BIG_KEYS (5000000), BIG_VALUE (1024), BIG_LIMIT_MIB (512),
# READBACK_SECONDS (20), LOAD_FLAGS (extra `kvctl bench --load` flags, default
# "--clients 64"), KVNODE_FLAGS, NO_BUILD=1 to use the binaries in bin/
# (point them at another revision's build to measure it before a change;
# bin/kvctl must know --load-from).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-cluster.sh
source scripts/bench-cluster.sh

TABLES=${TABLES:-growth catchup bigdata}
REPEATS=${REPEATS:-3}
ROW_SECONDS=${ROW_SECONDS:-10}
GROWTH_KEYS=${GROWTH_KEYS:-100000 1000000 3000000 10000000}
CATCHUP_KEYS=${CATCHUP_KEYS:-1000000}
BIG_KEYS=${BIG_KEYS:-5000000}
BIG_VALUE=${BIG_VALUE:-1024}
BIG_LIMIT_MIB=${BIG_LIMIT_MIB:-512}
READBACK_SECONDS=${READBACK_SECONDS:-20}
LOAD_FLAGS=${LOAD_FLAGS:---clients 64}

# run_json ARGS... runs `kvctl bench --json ARGS` and prints its report.
run_json() { bin/kvctl bench --json --timeout 10s "$@" 2>/dev/null; }

# load FROM TO VALUE prints "keys/s errors[,CODE=N...] seconds" of loading
# keys FROM..TO-1. A put that fails is sent again until it succeeds (for up
# to a minute), so that every key exists; what failed for good is counted.
load() {
	local from=$1 to=$2 value=$3 args=()
	((from == 0)) || args=(--load-from "$from")
	# shellcheck disable=SC2086 # LOAD_FLAGS is a list of flags
	run_json --workload W --load --duration 0 --keys "$to" --value-size "$value" --retry 60s "${args[@]}" $LOAD_FLAGS |
		jq -r '.load | "\(.ok / .seconds | floor) \(.errors)\(.operations[0].errors // {} | to_entries | map(",\(.key)=\(.value)") | join("")) \(.seconds | floor)"'
}

rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
# state_bytes I prints the bytes of nI's engine on disk (0 for a build from
# before the engine, which kept its state in memory).
state_bytes() { if [[ -d "$BENCH_TMP/cluster/n$1/state" ]]; then du -sb "$BENCH_TMP/cluster/n$1/state" | cut -f1; else echo 0; fi; }
elapsed_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

# restart_ready I SIGNAL stops node nI with SIGNAL, starts it again serving
# /readyz on a free port and sets READY_SECONDS to the seconds from its start
# until /readyz answered 200, and CAUGHT_SECONDS until every replica on it had
# applied its primary's commit index. (Not in a subshell: the shell must wait
# for its own child and keep the new PID.)
restart_ready() {
	local i=$1 sig=$2 port pid=${RINGKV_PIDS[$1 - 1]} t0 flags=${KVNODE_FLAGS:-}
	kill "-$sig" "$pid"
	wait "$pid" 2>/dev/null || true
	port=$(free_ports 1)
	t0=$EPOCHREALTIME
	KVNODE_FLAGS="$flags --metrics-addr 127.0.0.1:$port" ringkv_start_node "$i" "$BENCH_TMP/cluster"
	until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do
		kill -0 "${RINGKV_PIDS[i - 1]}" 2>/dev/null || { echo "n$i exited" >&2; tail "$BENCH_TMP/cluster/n$i.log" >&2; return 1; }
		sleep 0.05
	done
	READY_SECONDS=$(elapsed_since "$t0")
	until caught_up "$i"; do sleep 0.1; done
	CAUGHT_SECONDS=$(elapsed_since "$t0")
}

table_growth() {
	fresh_cluster
	echo
	echo "growth: \`kvctl bench --workload W --write-consistency strong --clients 64 --value-size 100 --keys N --duration ${ROW_SECONDS}s\` after \`kvctl bench --load --load-from PREV --keys N $LOAD_FLAGS\`"
	echo
	echo "| keys held | load to N: keys/s (s, errors) | strong put ops/s median (min–max) | p50 ms | p99 ms | errors | n1 engine on disk | n1 resident | load average |"
	echo "|---|---|---|---|---|---|---|---|---|"
	local prev=0 n r ld rows
	for n in $GROWTH_KEYS; do
		read -r -a ld <<<"$(load "$prev" "$n" 100)"
		rows=$(for ((r = 1; r <= REPEATS; r++)); do
			run_json --workload W --write-consistency strong --clients 64 --keys "$n" --value-size 100 --duration "${ROW_SECONDS}s" |
				jq -r '.run | "\(.throughput) \(.operations[0].latency_us.p50 / 1000) \(.operations[0].latency_us.p99 / 1000) \(.errors)"'
		done | sort -n | awk '{ ops[NR] = $1; p50[NR] = $2; p99[NR] = $3; err += $4 }
			END { m = int((NR + 1) / 2); printf "%.0f (%.0f–%.0f) | %.2f | %.2f | %d", ops[m], ops[1], ops[NR], p50[m], p99[m], err }')
		echo "| $n | ${ld[0]} (${ld[2]} s, ${ld[1]}) | $rows | $(($(state_bytes 1) / 1048576)) MiB | $(rss_mib "${RINGKV_PIDS[0]}") MiB | $(cut -d' ' -f1 /proc/loadavg) |"
		prev=$n
	done
	sleep 30 # let compactions settle before the size is read
	echo
	echo "disk after the last load and 30 s idle: engine bytes per key (the state dir over $prev keys, without what the memtables hold unflushed, at most 2 × --memtable-size; raw key + value $((6 + ${#prev} + 100)) B at most):"
	for i in 1 2 3; do echo "- n$i: $(awk -v b="$(state_bytes "$i")" -v n="$prev" 'BEGIN { printf "%.1f", b / n }') B per key"; done
	echo
	echo "restart of n1 holding $prev keys, seconds from process start to /readyz 200, and to every replica on it having applied its primary's commit index:"
	restart_ready 1 TERM
	echo "- after SIGTERM: $READY_SECONDS s, caught up $CAUGHT_SECONDS s"
	wait_until "the cluster did not settle" "$BENCH_TMP/cluster" "${RINGKV_PIDS[*]}" ringkv_ready
	restart_ready 1 KILL
	echo "- after SIGKILL: $READY_SECONDS s, caught up $CAUGHT_SECONDS s"
}

table_catchup() {
	fresh_cluster
	stop_pids "${RINGKV_PIDS[2]}"
	local ld t0
	read -r -a ld <<<"$(load 0 "$CATCHUP_KEYS" 100)"
	t0=$EPOCHREALTIME
	ringkv_start_node 3 "$BENCH_TMP/cluster"
	until caught_up 3; do sleep 0.2; done
	echo
	[[ -z "${KEEP_LOGS:-}" ]] || cp "$BENCH_TMP"/cluster/*.log "$KEEP_LOGS"/
	echo "catchup: n3 stopped empty, $CATCHUP_KEYS keys loaded (${ld[0]} keys/s, ${ld[1]} errors), n3 restarted: every replica on it applied what its primary committed after $(elapsed_since "$t0") s (process start included); n3 engine $(($(state_bytes 3) / 1048576)) MiB, resident $(rss_mib "${RINGKV_PIDS[2]}") MiB"
}

table_bigdata() {
	local i ld rb
	trap 'ringkv_stop; remove_cgroups; rm -rf "$BENCH_TMP"' EXIT
	make_cgroups memory memory.limit_in_bytes $((BIG_LIMIT_MIB * 1048576)) n1 n2 n3
	export RINGKV_CGROUP=$BENCH_CGROUP
	KVNODE_LOG_LEVEL=info fresh_cluster
	echo
	echo "bigdata: every kvnode in a cgroup limited to $BIG_LIMIT_MIB MiB; $(grep -h -o 'Go memory limit set.*' "$BENCH_TMP"/cluster/n1.log | head -1)"
	read -r -a ld <<<"$(load 0 "$BIG_KEYS" "$BIG_VALUE")"
	echo "loaded $BIG_KEYS keys × $BIG_VALUE B ($((BIG_KEYS * BIG_VALUE / 1048576)) MiB of values) in ${ld[2]} s: ${ld[0]} keys/s, ${ld[1]} errors"
	rb=$(run_json --workload C --read-consistency local --clients 16 --keys "$BIG_KEYS" --duration "${READBACK_SECONDS}s" |
		jq -r '.run | "\(.ok) reads found, \(.errors) failed \(.operations[0].errors // {})"')
	echo "read back: $READBACK_SECONDS s of local gets of random keys: $rb"
	echo
	echo "| node | alive | resident MiB (peak) | cgroup peak MiB | cgroup limit hits | OOM kills | engine on disk MiB | bytes per key |"
	echo "|---|---|---|---|---|---|---|---|"
	for i in 1 2 3; do
		local cg="$RINGKV_CGROUP/n$i" pid=${RINGKV_PIDS[i - 1]}
		echo "| n$i | $(kill -0 "$pid" 2>/dev/null && echo yes || echo NO) | $(rss_mib "$pid") ($(hwm_mib "$pid")) | $(($(cat "$cg/memory.max_usage_in_bytes") / 1048576)) | $(cat "$cg/memory.failcnt") | $(awk '/oom_kill / { print $2 }' "$cg/memory.oom_control") | $(($(state_bytes "$i") / 1048576)) | $(awk -v b="$(state_bytes "$i")" -v n="$BIG_KEYS" 'BEGIN { printf "%.0f", b / n }') |"
	done
	unset RINGKV_CGROUP
}

main() {
	local t
	for t in $TABLES; do
		declare -F "table_$t" >/dev/null || { echo "TABLES: unknown table \"$t\", want some of: growth catchup bigdata" >&2; exit 2; }
	done
	bench_init
	echo "ringkv $(git describe --always --dirty 2>/dev/null || echo '?'), 3 nodes on 127.0.0.1, $(nproc) cores, flags: ${KVNODE_FLAGS:-(defaults)}; median of $REPEATS; $(date -u '+%Y-%m-%d %H:%M UTC')"
	for t in $TABLES; do "table_$t"; done
}

main "$@"
