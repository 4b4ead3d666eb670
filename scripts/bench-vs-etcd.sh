#!/usr/bin/env bash
# Side by side on this machine: a 3-member etcd (Debian's etcd-server) driven
# by etcd's own benchmark tool, and a 3-node ringkv cluster driven by
# `kvctl bench`, with 100-byte values over a 100 000-key space. Prints one
# markdown table: per row and client count, the median ops/s (min–max over the
# repeats), median p50/p99 and the ratio ringkv/etcd.
#
#   ringkv row        etcd baseline
#   strong (put)      put
#   fast   (put)      put
#   quorum (get)      linearizable range
#   local  (get)      serializable range
#
# Both clusters live for the whole script and the rows are interleaved (per
# repeat and client count: the etcd baselines, then the ringkv rows), so slow
# drifts of a shared machine hit both alike. The cluster not being measured is
# paused (SIGSTOP): an idle 3-node ringkv with 16 partitions keeps ~0.4 cores
# busy with Raft heartbeats, which would otherwise be taken from etcd; after
# SIGCONT the script waits until the cluster is healthy and (ringkv) its
# primaries are stable for a second. Everything listens on 127.0.0.1
# (free ports); data lives in a temp dir; every process is stopped by PID on
# exit. etcd's benchmark takes a request count, not a duration: the first
# run of each baseline is sized by a short probe, later ones by the rate the
# previous run measured.
#
# Env: ROWS (default "strong fast quorum local"), CLIENTS (default "1 16 64"),
# REPEATS (default 3), ROW_SECONDS (per run, default 15; bash owns SECONDS),
# KEYS (default 100000), ETCD_BENCH_FLAGS (default --target-leader, like
# ringkv's client, which talks to each partition's primary), KVNODE_FLAGS.
# Quick look: ROWS=strong CLIENTS=64 REPEATS=1 ROW_SECONDS=5 scripts/bench-vs-etcd.sh
# Sourced, it defines its helpers (install_tools, etcd_start, run_etcd,
# run_ringkv, summary, ...) and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-cluster.sh
source scripts/bench-cluster.sh

ROWS=${ROWS:-strong fast quorum local}
CLIENTS=${CLIENTS:-1 16 64}
REPEATS=${REPEATS:-3}
ROW_SECONDS=${ROW_SECONDS:-15}
KEYS=${KEYS:-100000}
ETCD_BENCH_FLAGS=${ETCD_BENCH_FLAGS:---target-leader}
VALUE_SIZE=100
ETCD_BENCH_VERSION=v3.5.11
ETCD_BENCH=bin/tools/etcd-benchmark-$ETCD_BENCH_VERSION
declare -A BASELINE=([strong]=put [fast]=put [quorum]=lin [local]=ser)
declare -A RINGKV_ARGS=(
	[strong]="--workload W --write-consistency strong"
	[fast]="--workload W --write-consistency fast"
	[quorum]="--workload C --read-consistency quorum"
	[local]="--workload C --read-consistency local"
)
declare -A ETCD_ARGS=(
	[put]="put --key-size 10 --key-space-size $KEYS --val-size $VALUE_SIZE"
	[lin]="range bench/range --consistency l"
	[ser]="range bench/range --consistency s"
)

for r in $ROWS; do
	[[ -n "${BASELINE[$r]:-}" ]] || { echo "ROWS: unknown row \"$r\", want some of: strong fast quorum local" >&2; exit 2; }
done
for c in $CLIENTS; do
	[[ "$c" =~ ^[1-9][0-9]*$ ]] || { echo "CLIENTS: \"$c\" is not a positive integer" >&2; exit 2; }
done
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || { echo "REPEATS = \"$REPEATS\", want a positive integer" >&2; exit 2; }
[[ "$ROW_SECONDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROW_SECONDS = \"$ROW_SECONDS\", want a positive integer" >&2; exit 2; }

install_tools() {
	local pkgs=()
	command -v etcd >/dev/null || pkgs+=(etcd-server)
	command -v etcdctl >/dev/null || pkgs+=(etcd-client)
	command -v jq >/dev/null || pkgs+=(jq)
	if ((${#pkgs[@]})); then
		[[ $(id -u) == 0 ]] || { echo "need root to apt-get install ${pkgs[*]}" >&2; exit 1; }
		apt-get update
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
	fi
	if [[ ! -x "$ETCD_BENCH" ]]; then
		# etcd's go.mod has replace directives, so `go install` refuses the
		# tool; a wrapper module that depends on it builds it.
		local root=$PWD mod
		mod=$(mktemp -d)
		(cd "$mod" && go mod init x >/dev/null 2>&1 &&
			go get -tool "go.etcd.io/etcd/v3/tools/benchmark@$ETCD_BENCH_VERSION" &&
			CGO_ENABLED=0 go build -o "$root/$ETCD_BENCH" go.etcd.io/etcd/v3/tools/benchmark)
		rm -rf "$mod"
	fi
}

# etcd_start DIR starts 3 members with data and logs under DIR, sets
# ETCD_PIDS and ETCD_ENDPOINTS, and waits until all are healthy (60 s).
# With ETCD_CGROUP set (a cgroup v1 directory), member eI starts inside its
# subgroup ETCD_CGROUP/eI, which must exist.
etcd_start() {
	local dir=$1 i cluster="" ports
	mkdir -p "$dir"
	mapfile -t ports < <(free_ports 6)
	for i in 1 2 3; do cluster+="${cluster:+,}e$i=http://127.0.0.1:${ports[i + 2]}"; done
	ETCD_PIDS=()
	ETCD_ENDPOINTS=""
	for i in 1 2 3; do
		local client=http://127.0.0.1:${ports[i - 1]} peer=http://127.0.0.1:${ports[i + 2]}
		cgroup_enter "${ETCD_CGROUP:+$ETCD_CGROUP/e$i}"
		"${CGROUP_ENTER[@]}" etcd --name "e$i" --data-dir "$dir/e$i" \
			--listen-client-urls "$client" --advertise-client-urls "$client" \
			--listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
			--initial-cluster "$cluster" --initial-cluster-state new \
			--initial-cluster-token ringkv-bench --logger zap --log-level warn >"$dir/e$i.log" 2>&1 &
		ETCD_PIDS+=($!)
		ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}127.0.0.1:${ports[i - 1]}"
	done
	wait_until "etcd was not healthy" "$dir" "${ETCD_PIDS[*]}" etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health
}

# ringkv_leaders prints every partition's primary and highest term.
ringkv_leaders() {
	bin/kvctl status --json --timeout 2s | jq -c '[.partitions[] | [.primary, ([.replicas[].term] | max)]]'
}

# ringkv_settled succeeds when every partition has a primary and none
# changed within a second.
ringkv_settled() {
	local a b
	a=$(ringkv_leaders) && ! grep -q '""' <<<"$a" && sleep 1 && b=$(ringkv_leaders) && [[ "$a" == "$b" ]]
}

pause() { kill -STOP "$@"; }

# require_alive WHAT PID... exits (and so cleans up) if any PID is gone: a
# member crashed, or Ctrl-C reached the process group (a driver that exits
# cleanly on SIGINT keeps bash from running its INT trap).
require_alive() {
	local what=$1 pid
	shift
	for pid in "$@"; do
		kill -0 "$pid" 2>/dev/null || { echo "$what (pid $pid) exited; stopping" >&2; exit 1; }
	done
}

resume_etcd() {
	require_alive "an etcd member" "${ETCD_PIDS[@]}"
	kill -CONT "${ETCD_PIDS[@]}"
	wait_until "etcd was not healthy after SIGCONT" "$BENCH_TMP/etcd" "${ETCD_PIDS[*]}" etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health
}

resume_ringkv() {
	require_alive "a ringkv node" "${RINGKV_PIDS[@]}"
	kill -CONT "${RINGKV_PIDS[@]}"
	wait_until "ringkv primaries did not settle after SIGCONT" "$BENCH_TMP/ringkv" "${RINGKV_PIDS[*]}" ringkv_settled
}

# timed OUT CMD... runs CMD (bounded) with its output in OUT and prints the
# CPU cores it used: (user + sys) / wall.
timed() {
	local out=$1 t
	shift
	local TIMEFORMAT="%U %S %R"
	# --foreground keeps CMD in our process group, so Ctrl-C reaches it.
	t=$({ time timeout --foreground $((ROW_SECONDS * 4 + 60)) "$@" >"$out" 2>&1; } 2>&1) || return 1
	awk '{ printf "%.2f\n", ($1 + $2) / ($3 > 0 ? $3 : 1) }' <<<"$t"
}

declare -A ETCD_RATE # last measured ops/s per baseline and client count

# run_etcd KIND CLIENTS REP appends a result line, sized to last ROW_SECONDS.
run_etcd() {
	local kind=$1 c=$2 rep=$3 key="$1:$2" conns=$((($2 + 15) / 16)) out="$BENCH_TMP/etcd.out" cpu total
	# shellcheck disable=SC2086 # the ARGS are lists of flags
	local cmd=("$ETCD_BENCH" --endpoints "$ETCD_ENDPOINTS" $ETCD_BENCH_FLAGS --conns "$conns" --clients "$c" ${ETCD_ARGS[$kind]})
	if [[ -z "${ETCD_RATE[$key]:-}" ]]; then
		timed "$out" "${cmd[@]}" --total $((c * 50 > 1000 ? c * 50 : 1000)) >/dev/null ||
			{ echo "etcd $kind probe failed:" >&2; tail -n 5 "$out" >&2; return 0; }
		ETCD_RATE[$key]=$(awk '/Requests\/sec:/ { print $2 }' "$out")
	fi
	total=$(awk -v r="${ETCD_RATE[$key]}" -v s="$ROW_SECONDS" -v c="$c" 'BEGIN { t = int(r * s); print (t > c ? t : c) }')
	if ! cpu=$(timed "$out" "${cmd[@]}" --total "$total"); then
		echo "etcd $kind clients=$c failed:" >&2
		tail -n 5 "$out" >&2
		return 0
	fi
	awk -v k="etcd:$key" -v rep="$rep" -v cpu="$cpu" '
		/Requests\/sec:/ { rps = $2 }
		$1 == "50%" { p50 = $3 * 1000 }
		$1 == "99%" { p99 = $3 * 1000 }
		/Error distribution/ { inerr = 1; next }
		inerr && /\[[0-9]+\]/ { n = $1; gsub(/[^0-9]/, "", n); errs += n }
		END { printf "%s %d %.1f %.3f %.3f %d %s\n", k, rep, rps, p50, p99, errs, cpu }' "$out" >>"$RESULTS"
	ETCD_RATE[$key]=$(awk '/Requests\/sec:/ { print $2 }' "$out")
}

# run_ringkv ROW CLIENTS REP appends a result line.
run_ringkv() {
	local row=$1 c=$2 rep=$3 out="$BENCH_TMP/ringkv.out" cpu
	# shellcheck disable=SC2086 # the ARGS are lists of flags
	if ! cpu=$(timed "$out" bin/kvctl bench --json ${RINGKV_ARGS[$row]} --clients "$c" --keys "$KEYS" \
		--value-size "$VALUE_SIZE" --duration "${ROW_SECONDS}s"); then
		echo "ringkv $row clients=$c failed:" >&2
		tail -n 5 "$out" >&2
		return 0
	fi
	# kvctl writes its progress lines to stderr, which timed mixed into out;
	# the JSON object starts at the first line that is "{".
	sed -n '/^{/,$p' "$out" | jq -r --arg k "ringkv:$row:$c" --arg rep "$rep" --arg cpu "$cpu" \
		'[$k, $rep, .run.throughput, .run.operations[0].latency_us.p50 / 1000,
		  .run.operations[0].latency_us.p99 / 1000, .run.errors, $cpu] | map(tostring) | join(" ")' >>"$RESULTS"
}

# summary KEY FIELD prints the median, min and max of FIELD (2 = ops/s, ...)
# over KEY's result lines, or "- - -".
summary() {
	awk -v k="$1" -v f="$2" '$1 == k { print $f }' "$RESULTS" | sort -g |
		awk '{ a[NR] = $1 } END {
			if (NR == 0) { print "- - -"; exit }
			m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
			print m, a[1], a[NR] }'
}

print_table() {
	local r c e k eo ro ep50 ep99 rp50 rp99 eerr rerr ecpu rcpu
	echo "| ringkv | etcd | clients | etcd ops/s (min–max) | etcd p50 / p99 ms | ringkv ops/s (min–max) | ringkv p50 / p99 ms | ops/s ringkv/etcd | p99 ringkv/etcd | errors etcd / ringkv | driver CPU cores etcd / ringkv |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|"
	for r in $ROWS; do
		for c in $CLIENTS; do
			e="etcd:${BASELINE[$r]}:$c" k="ringkv:$r:$c"
			read -r -a eo <<<"$(summary "$e" 3)"
			read -r -a ro <<<"$(summary "$k" 3)"
			read -r ep50 _ <<<"$(summary "$e" 4)"
			read -r ep99 _ <<<"$(summary "$e" 5)"
			read -r rp50 _ <<<"$(summary "$k" 4)"
			read -r rp99 _ <<<"$(summary "$k" 5)"
			eerr=$(awk -v k="$e" '$1 == k { s += $6 } END { print s + 0 }' "$RESULTS")
			rerr=$(awk -v k="$k" '$1 == k { s += $6 } END { print s + 0 }' "$RESULTS")
			read -r ecpu _ <<<"$(summary "$e" 7)"
			read -r rcpu _ <<<"$(summary "$k" 7)"
			awk -v r="$r" -v b="${BASELINE[$r]}" -v c="$c" \
				-v eo="${eo[0]}" -v emin="${eo[1]}" -v emax="${eo[2]}" -v ro="${ro[0]}" -v rmin="${ro[1]}" -v rmax="${ro[2]}" \
				-v ep50="$ep50" -v ep99="$ep99" -v rp50="$rp50" -v rp99="$rp99" \
				-v eerr="$eerr" -v rerr="$rerr" -v ecpu="$ecpu" -v rcpu="$rcpu" 'BEGIN {
				ratio = (eo > 0 && ro != "-") ? sprintf("%.2f×", ro / eo) : "-"
				pratio = (ep99 > 0 && rp99 != "-") ? sprintf("%.2f", rp99 / ep99) : "-"
				printf "| %s | %s | %d | %.0f (%.0f–%.0f) | %.2f / %.2f | %.0f (%.0f–%.0f) | %.2f / %.2f | %s | %s | %d / %d | %.2f / %.2f |\n",
					r, b, c, eo, emin, emax, ep50, ep99, ro, rmin, rmax, rp50, rp99, ratio, pratio, eerr, rerr, ecpu, rcpu }'
		done
	done
}

main() {
	install_tools
	ringkv_build
	BENCH_TMP=$(mktemp -d)
	RESULTS=$BENCH_TMP/results
	RINGKV_PIDS=()
	ETCD_PIDS=()
	# A stopped process keeps SIGTERM pending: continue everything first.
	trap 'kill -CONT "${RINGKV_PIDS[@]}" "${ETCD_PIDS[@]}" 2>/dev/null; ringkv_stop; stop_pids "${ETCD_PIDS[@]}"; rm -rf "$BENCH_TMP"' EXIT
	trap 'exit 130' INT TERM
	local load_start r c k rep kinds=()
	load_start=$(cut -d' ' -f1-3 /proc/loadavg)
	etcd_start "$BENCH_TMP/etcd"
	ringkv_start "$BENCH_TMP/ringkv"
	for r in $ROWS; do
		[[ " ${kinds[*]} " == *" ${BASELINE[$r]} "* ]] || kinds+=("${BASELINE[$r]}")
	done
	# The reads need their keys: one etcd key (its benchmark ranges over
	# one key), and ringkv's whole key space.
	if [[ " $ROWS " == *" quorum "* || " $ROWS " == *" local "* ]]; then
		etcdctl --endpoints "$ETCD_ENDPOINTS" put bench/range "$(head -c $VALUE_SIZE /dev/zero | tr '\0' v)" >/dev/null
		echo "loading $KEYS ringkv keys..." >&2
		bin/kvctl bench --load --duration 0 --keys "$KEYS" --clients 64 --value-size "$VALUE_SIZE" >&2
	fi
	pause "${ETCD_PIDS[@]}" "${RINGKV_PIDS[@]}"
	for rep in $(seq "$REPEATS"); do
		for c in $CLIENTS; do
			resume_etcd
			for k in "${kinds[@]}"; do
				echo "repeat $rep/$REPEATS, $c clients: etcd $k" >&2
				require_alive "an etcd member" "${ETCD_PIDS[@]}"
				run_etcd "$k" "$c" "$rep"
			done
			pause "${ETCD_PIDS[@]}"
			resume_ringkv
			for r in $ROWS; do
				echo "repeat $rep/$REPEATS, $c clients: ringkv $r" >&2
				require_alive "a ringkv node" "${RINGKV_PIDS[@]}"
				run_ringkv "$r" "$c" "$rep"
			done
			pause "${RINGKV_PIDS[@]}"
		done
	done
	echo
	echo "etcd $(etcd --version | awk '/etcd Version/ { print $3 }') (benchmark tool $ETCD_BENCH_VERSION, flags: $ETCD_BENCH_FLAGS) vs ringkv $(git describe --always --dirty 2>/dev/null || echo '?'); 3 members each on 127.0.0.1, $(nproc) cores,"
	echo "the cluster not measured paused;"
	echo "${VALUE_SIZE}-byte values, $KEYS keys, ${ROW_SECONDS} s per run, median of $REPEATS; load average before: $load_start, after: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	print_table
}

# Sourced (bench-scaleout.sh does), it only defines its helpers.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	main "$@"
fi
