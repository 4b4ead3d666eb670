#!/usr/bin/env bash
# Scale-out on one machine: every process in a cgroup (v1 cpu controller) of
# its own with the same CPU quota, so that adding a node adds CPU the way
# adding a machine would. A 3-member etcd under the same per-process quota
# is measured first (etcd's benchmark tool, puts), and stopped; then a
# 3-node ringkv cluster, grown with `kvctl join --wait` to each size of
# SIZES and split to the partitions fitted to it, runs the same strong-put
# `kvctl bench` at each size. The drivers
# (kvctl, etcd's benchmark) run outside the cgroups. Prints one markdown
# table: nodes, ops/s median (min–max), p50/p99, ratio to the first size and
# to etcd. Everything listens on free 127.0.0.1 ports, data lives in a temp
# dir, processes are stopped by PID and the cgroups removed on exit. Needs
# root (cgroups) and, like bench-vs-etcd.sh, installs etcd with apt.
#
# Env: QUOTA (cores per process, default 0.15), SIZES (default "3 6 9",
# ascending, the first 3), CLIENTS (one count, default 128), REPEATS (3),
# ROW_SECONDS (15), KEYS (100000), INITIAL_PARTITIONS (8) and PER_NODE (2):
# the cluster starts with INITIAL_PARTITIONS and splits to PER_NODE per node
# as it grows (kvnode --partitions-per-node, then kvctl split);
# KVNODE_FLAGS (every node).
set -euo pipefail
cd "$(dirname "$0")/.."

QUOTA=${QUOTA:-0.15}
SIZES=${SIZES:-3 6 9}
CLIENTS=${CLIENTS:-128}
REPEATS=${REPEATS:-3}
ROW_SECONDS=${ROW_SECONDS:-15}
KEYS=${KEYS:-100000}
PER_NODE=${PER_NODE:-2}
INITIAL_PARTITIONS=${INITIAL_PARTITIONS:-8}
KVNODE_FLAGS="--partitions $INITIAL_PARTITIONS --partitions-per-node $PER_NODE ${KVNODE_FLAGS:-}"
# shellcheck source=scripts/bench-vs-etcd.sh
source scripts/bench-vs-etcd.sh

[[ "$CLIENTS" =~ ^[1-9][0-9]*$ ]] || { echo "CLIENTS = \"$CLIENTS\", want one positive integer" >&2; exit 2; }
[[ "${SIZES%% *}" == 3 ]] || { echo "SIZES = \"$SIZES\", want sizes starting at 3" >&2; exit 2; }
PERIOD_US=100000
QUOTA_US=$(awk -v q="$QUOTA" -v p="$PERIOD_US" 'BEGIN { if (q <= 0) exit 1; printf "%d", q * p }') ||
	{ echo "QUOTA = \"$QUOTA\", want cores > 0" >&2; exit 2; }

# fitted N is the partition count N nodes split to at PER_NODE partitions
# per node (cluster.FittedPartitions: rounded up to a power of two), never
# below the count the cluster was created with.
fitted() {
	local p=1
	while ((p < $1 * PER_NODE)); do p=$((p * 2)); done
	echo $((p > INITIAL_PARTITIONS ? p : INITIAL_PARTITIONS))
}

# grow_to N starts nodes up to nN and joins each, waiting until its
# replicas moved, then until the partitions fitted to N nodes are split
# and placed.
grow_to() {
	local n=$1 i
	for ((i = ${#RINGKV_PIDS[@]} + 1; i <= n; i++)); do
		RINGKV_PORTS[i - 1]=$(free_ports 1)
		ringkv_start_node "$i" "$BENCH_TMP/ringkv" join
		wait_until "n$i did not listen" "$BENCH_TMP/ringkv" "${RINGKV_PIDS[i - 1]}" \
			bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "${RINGKV_PORTS[i - 1]}"
		echo "joining n$i..." >&2
		bin/kvctl join "n$i" "127.0.0.1:${RINGKV_PORTS[i - 1]}" --wait >&2
	done
	# The nodes split on their own to --partitions-per-node; the split
	# command waits until those splits are placed.
	echo "splitting to $(fitted "$n") partitions..." >&2
	bin/kvctl split --partitions "$(fitted "$n")" >&2
	wait_until "ringkv primaries did not settle after growing to $n nodes" "$BENCH_TMP/ringkv" "${RINGKV_PIDS[*]}" ringkv_settled
}

main() {
	local sizes=() s rep max
	read -r -a sizes <<<"$SIZES"
	max=${sizes[-1]}
	install_tools
	ringkv_build
	BENCH_TMP=$(mktemp -d)
	RINGKV_PIDS=()
	ETCD_PIDS=()
	trap 'ringkv_stop; stop_pids "${ETCD_PIDS[@]}"; remove_cgroups; rm -rf "$BENCH_TMP"' EXIT
	trap 'exit 130' INT TERM
	local names=(e1 e2 e3) i load_start
	for ((i = 1; i <= max; i++)); do names+=("n$i"); done
	make_cgroups cpu cpu.cfs_quota_us "$QUOTA_US" "${names[@]}"
	[[ $(cat "$BENCH_CGROUP/e1/cpu.cfs_period_us") == "$PERIOD_US" ]] ||
		{ echo "a new cgroup's cpu.cfs_period_us is not $PERIOD_US µs, which QUOTA assumes" >&2; exit 1; }
	load_start=$(cut -d' ' -f1-3 /proc/loadavg)

	RESULTS=$BENCH_TMP/results-etcd
	ETCD_CGROUP=$BENCH_CGROUP etcd_start "$BENCH_TMP/etcd"
	for rep in $(seq "$REPEATS"); do
		echo "repeat $rep/$REPEATS: etcd put, $CLIENTS clients" >&2
		run_etcd put "$CLIENTS" "$rep"
	done
	stop_pids "${ETCD_PIDS[@]}"
	ETCD_PIDS=()

	RINGKV_CGROUP=$BENCH_CGROUP ringkv_start "$BENCH_TMP/ringkv"
	for s in "${sizes[@]}"; do
		RINGKV_CGROUP=$BENCH_CGROUP grow_to "$s"
		RESULTS=$BENCH_TMP/results-ringkv-$s
		for rep in $(seq "$REPEATS"); do
			echo "repeat $rep/$REPEATS: ringkv strong put, $s nodes, $CLIENTS clients" >&2
			require_alive "a ringkv node" "${RINGKV_PIDS[@]}"
			run_ringkv strong "$CLIENTS" "$rep"
		done
	done

	echo
	echo "scale-out: every process limited to $QUOTA cores (cgroup v1 cpu, period ${PERIOD_US} µs); $(nproc) cores;"
	echo "ringkv $(git describe --always --dirty 2>/dev/null || echo '?') strong puts, etcd $(etcd --version | awk '/etcd Version/ { print $3 }') puts (benchmark $ETCD_BENCH_VERSION, $ETCD_BENCH_FLAGS);"
	echo "$CLIENTS clients, ${VALUE_SIZE}-byte values over $KEYS keys, ${ROW_SECONDS} s per run, median of $REPEATS; load average before: $load_start, after: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	# The driver's cores tell whether the machine, not the quota, was the
	# limit: the processes under test can take SIZE × QUOTA at most.
	echo "| system | nodes | partitions | ops/s median (min–max) | p50 / p99 ms | × 3 nodes | × etcd | driver cores |"
	echo "|---|---|---|---|---|---|---|---|"
	local e base o p50 p99 cpu
	RESULTS=$BENCH_TMP/results-etcd
	read -r -a e <<<"$(summary "etcd:put:$CLIENTS" 3)"
	read -r p50 _ <<<"$(summary "etcd:put:$CLIENTS" 4)"
	read -r p99 _ <<<"$(summary "etcd:put:$CLIENTS" 5)"
	read -r cpu _ <<<"$(summary "etcd:put:$CLIENTS" 7)"
	printf '| etcd | 3 | | %.0f (%.0f–%.0f) | %.2f / %.2f | | 1.00× | %.2f |\n' "${e[@]}" "$p50" "$p99" "$cpu"
	for s in "${sizes[@]}"; do
		RESULTS=$BENCH_TMP/results-ringkv-$s
		read -r -a o <<<"$(summary "ringkv:strong:$CLIENTS" 3)"
		read -r p50 _ <<<"$(summary "ringkv:strong:$CLIENTS" 4)"
		read -r p99 _ <<<"$(summary "ringkv:strong:$CLIENTS" 5)"
		read -r cpu _ <<<"$(summary "ringkv:strong:$CLIENTS" 7)"
		base=${base:-${o[0]}}
		awk -v s="$s" -v parts="$(fitted "$s")" -v o="${o[0]}" -v lo="${o[1]}" -v hi="${o[2]}" -v p50="$p50" -v p99="$p99" -v b="$base" -v e="${e[0]}" -v cpu="$cpu" 'BEGIN {
			printf "| ringkv | %d | %d | %.0f (%.0f–%.0f) | %.2f / %.2f | %.2f× | %s | %.2f |\n", s, parts, o, lo, hi, p50, p99,
				(b > 0 ? o / b : 0), (e > 0 ? sprintf("%.2f×", o / e) : "-"), cpu }'
	done
}

main "$@"
