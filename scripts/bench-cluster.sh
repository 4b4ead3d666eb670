#!/usr/bin/env bash
# Builds kvnode and kvctl, starts a 3-node ringkv cluster on free 127.0.0.1
# ports with its data in a temp dir, runs a few `kvctl bench` rows and prints
# their tables. The nodes are stopped by PID when the script exits, however it
# exits. Run it through `make bench-cluster`.
#
# Env: ROW_SECONDS (each row's duration, default 10), CLIENTS (default 64),
# KEYS (default 100000), KVNODE_FLAGS (extra kvnode flags).
#
# Sourced (as the other bench scripts do) it only defines the helpers:
# free_ports, wait_until, stop_pids, ringkv_build, ringkv_start,
# make_cgroups, remove_cgroups, cgroup_enter, ringkv_start_node,
# fresh_cluster, caught_up, cpu_ticks, bench_init,
# ringkv_stop.
set -euo pipefail

# free_ports N prints N distinct TCP ports of 127.0.0.1 that nothing listens
# on, probing upwards from a random base so that concurrent runs rarely meet.
# The ports lie below the kernel's ephemeral range: a port some outgoing
# connection uses locally looks free to the probe, yet cannot be bound.
free_ports() {
	local want=$1 low found=0 port
	read -r low _ </proc/sys/net/ipv4/ip_local_port_range
	port=$((10000 + RANDOM % (low - 11000)))
	while ((found < want)); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			found=$((found + 1))
		fi
		port=$((port + 1))
	done
}

# wait_until WHAT LOGDIR "PID..." CMD... runs CMD every half second until it
# succeeds; if 60 s pass or one of the PIDs exits first, it says that WHAT did
# not happen, shows the logs in LOGDIR and fails.
wait_until() {
	local what=$1 logs=$2 pids=$3 deadline=$((SECONDS + 60)) pid
	shift 3
	until "$@" >/dev/null 2>&1; do
		for pid in $pids; do
			kill -0 "$pid" 2>/dev/null || deadline=0
		done
		if ((SECONDS >= deadline)); then
			echo "$what within 60 s, or a process exited; logs:" >&2
			tail -n 20 "$logs"/*.log >&2
			return 1
		fi
		sleep 0.5
	done
}

# ringkv_ready succeeds once every node answers and every partition has a
# primary.
ringkv_ready() {
	local out
	out=$(bin/kvctl status --timeout 2s) && ! grep -qE '\(none\)|unreachable' <<<"$out"
}

# stop_pids PID... sends SIGTERM, waits up to 15 s, then SIGKILLs what is left.
stop_pids() {
	local pid deadline=$((SECONDS + 15))
	(($#)) || return 0
	kill -TERM "$@" 2>/dev/null || true
	for pid in "$@"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}

ringkv_build() {
	mkdir -p bin
	CGO_ENABLED=0 go build -o bin/kvnode ./cmd/kvnode
	CGO_ENABLED=0 go build -o bin/kvctl ./cmd/kvctl
}

# ringkv_start DIR starts 3 nodes with data under DIR and logs in DIR/n*.log,
# sets RINGKV_PIDS, RINGKV_PORTS, RINGKV_PEERS and RINGKV_ADDR, and waits until
# every partition has a primary (at most 60 s).
ringkv_start() {
	local dir=$1 i
	mapfile -t RINGKV_PORTS < <(free_ports 3)
	RINGKV_PEERS=""
	for i in 1 2 3; do RINGKV_PEERS+="${RINGKV_PEERS:+,}n$i=127.0.0.1:${RINGKV_PORTS[i - 1]}"; done
	RINGKV_PIDS=()
	for i in 1 2 3; do ringkv_start_node "$i" "$dir"; done
	export RINGKV_ADDR=127.0.0.1:${RINGKV_PORTS[0]}
	wait_until "ringkv did not elect a primary for every partition" "$dir" "${RINGKV_PIDS[*]}" ringkv_ready
}

# cgroup_enter GROUP sets CGROUP_ENTER to the command prefix that runs a
# command inside cgroup (v1) directory GROUP, which must exist; to nothing
# for an empty GROUP. The shell joins the group before it becomes the
# command, so that the command sees its limits from the start and its PID
# is the one $! names.
cgroup_enter() {
	CGROUP_ENTER=()
	[[ -z "$1" ]] || CGROUP_ENTER=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$1")
}

# make_cgroups CONTROLLER FILE VALUE NAME... makes BENCH_CGROUP, a cgroup
# (v1) of CONTROLLER under this shell's own, and in it a group per NAME
# whose FILE holds VALUE (memory.limit_in_bytes, cpu.cfs_quota_us, ...).
# Needs root and the controller mounted as cgroup v1; remove_cgroups
# undoes it.
make_cgroups() {
	local controller=$1 file=$2 value=$3 own mount name
	shift 3
	own=$(awk -F: -v c="$controller" '{ n = split($2, cs, ","); for (i = 1; i <= n; i++) if (cs[i] == c) print $3 }' /proc/self/cgroup)
	mount=$(awk -v c="$controller" '$3 == "cgroup" { n = split($4, o, ","); for (i = 1; i <= n; i++) if (o[i] == c) { print $2; exit } }' /proc/mounts)
	[[ -n "$mount" && -w "$mount${own%/}" ]] || { echo "needs the cgroup v1 $controller controller, writable (root)" >&2; return 1; }
	BENCH_CGROUP=$mount${own%/}/ringkv-bench-$$
	mkdir "$BENCH_CGROUP"
	for name in "$@"; do
		mkdir "$BENCH_CGROUP/$name"
		echo "$value" >"$BENCH_CGROUP/$name/$file"
	done
}

# remove_cgroups removes what make_cgroups made, once its processes are
# gone.
remove_cgroups() {
	[[ -n "${BENCH_CGROUP:-}" && -d "$BENCH_CGROUP" ]] || return 0
	local g
	for g in "$BENCH_CGROUP"/*/; do rmdir "$g" 2>/dev/null || true; done
	rmdir "$BENCH_CGROUP" 2>/dev/null || true
}

# ringkv_start_node I DIR [join] starts (or restarts) node nI of the cluster
# ringkv_start made, with data in DIR/nI and its log appended to DIR/nI.log;
# its PID goes into RINGKV_PIDS[I-1]. With RINGKV_CGROUP set (a cgroup v1
# directory), the node starts inside its subgroup RINGKV_CGROUP/nI, which
# must exist. With "join" it starts without --peers, to wait for
# `kvctl join`; RINGKV_PORTS[I-1] must be set.
ringkv_start_node() {
	local i=$1 dir=$2 peers=(--peers "$RINGKV_PEERS")
	[[ "${3:-}" != join ]] || peers=()
	mkdir -p "$dir/n$i"
	cgroup_enter "${RINGKV_CGROUP:+$RINGKV_CGROUP/n$i}"
	# shellcheck disable=SC2086 # KVNODE_FLAGS is a list of flags
	"${CGROUP_ENTER[@]}" bin/kvnode --id "n$i" --listen "127.0.0.1:${RINGKV_PORTS[i - 1]}" --data-dir "$dir/n$i" \
		"${peers[@]}" --log-level "${KVNODE_LOG_LEVEL:-warn}" ${KVNODE_FLAGS:-} >>"$dir/n$i.log" 2>&1 &
	RINGKV_PIDS[i - 1]=$!
}

# fresh_cluster stops the running cluster, if any, and starts a new one with
# its data in BENCH_TMP/cluster.
fresh_cluster() {
	ringkv_stop
	rm -rf "$BENCH_TMP/cluster"
	ringkv_start "$BENCH_TMP/cluster"
}

# caught_up N succeeds once every replica on nN has applied its partition's
# commit index as the primary reports it.
caught_up() {
	bin/kvctl status --json --timeout 2s 2>/dev/null | jq -e --arg n "n$1" '
		[.partitions[] | (.replicas | map(select(.state == "leader")) | .[0].commit_index) as $c
			| .replicas[] | select(.node == $n) | .applied_index >= $c] | all' >/dev/null
}

# cpu_ticks PID... prints the sum of utime and stime of each PID, in clock
# ticks, one per line.
cpu_ticks() {
	local pid
	for pid in "$@"; do
		# Fields 14 and 15 after the command name, which may hold spaces.
		sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }'
	done
}

# bench_init makes the temp dir BENCH_TMP, removes it and stops the cluster
# on exit, and builds the binaries unless NO_BUILD is set.
bench_init() {
	BENCH_TMP=$(mktemp -d)
	RINGKV_PIDS=()
	trap 'ringkv_stop; rm -rf "$BENCH_TMP"' EXIT
	trap 'exit 130' INT TERM
	[[ -n "${NO_BUILD:-}" ]] || ringkv_build
}

ringkv_stop() {
	stop_pids "${RINGKV_PIDS[@]}"
	RINGKV_PIDS=()
}

main() {
	cd "$(dirname "$0")/.."
	local secs=${ROW_SECONDS:-10} clients=${CLIENTS:-64} keys=${KEYS:-100000}
	BENCH_TMP=$(mktemp -d)
	RINGKV_PIDS=()
	trap 'ringkv_stop; rm -rf "$BENCH_TMP"' EXIT
	trap 'exit 130' INT TERM
	ringkv_build
	ringkv_start "$BENCH_TMP"
	echo "ringkv: 3 nodes, $RINGKV_ADDR...; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
	local common=(--clients "$clients" --keys "$keys" --value-size 100)
	local rows=(
		"--load --duration 0"
		"--workload W --write-consistency strong --duration ${secs}s"
		"--workload W --write-consistency fast --duration ${secs}s"
		"--workload C --read-consistency local --duration ${secs}s"
		"--workload C --read-consistency quorum --duration ${secs}s"
		"--workload A --distribution zipfian --duration ${secs}s"
	)
	local row
	for row in "${rows[@]}"; do
		echo
		echo "\$ kvctl bench ${common[*]} $row"
		# shellcheck disable=SC2086 # row is a list of flags
		bin/kvctl bench "${common[@]}" $row 2>/dev/null
	done
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	main "$@"
fi
