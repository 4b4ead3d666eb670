#!/usr/bin/env bash
# Measures the replication lag of fast writes under load: starts a 3-node
# cluster on free 127.0.0.1 ports (data in a temp dir, every process
# stopped by PID on exit), loads the key space, and for each of REPEATS runs
# of `kvctl bench --workload W --write-consistency fast` prints the client's
# table and the p50/p90/p99/p99.9 of ringkv_fast_write_replication_seconds
# (from each write's journal append to its application by a primary),
# summed over the three nodes' histograms for that run, and the deepest
# journal seen at the end of the run. Quantiles are the upper bounds of
# their histogram buckets (steps of 1.5x).
#
# Env: REPEATS (3), ROW_SECONDS (15), CLIENTS (64), KEYS (100000),
# KVNODE_FLAGS (for every node), NO_BUILD.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-cluster.sh
source scripts/bench-cluster.sh

repeats=${REPEATS:-3} secs=${ROW_SECONDS:-15} clients=${CLIENTS:-64} keys=${KEYS:-100000}
BENCH_TMP=$(mktemp -d)
pids=()
trap 'stop_pids "${pids[@]}"; rm -rf "$BENCH_TMP"' EXIT
trap 'exit 130' INT TERM
[[ -n "${NO_BUILD:-}" ]] || ringkv_build

mapfile -t ports < <(free_ports 6)
peers=""
for i in 1 2 3; do peers+="${peers:+,}n$i=127.0.0.1:${ports[i - 1]}"; done
for i in 1 2 3; do
	mkdir -p "$BENCH_TMP/n$i"
	# shellcheck disable=SC2086 # KVNODE_FLAGS is a list of flags
	bin/kvnode --id "n$i" --listen "127.0.0.1:${ports[i - 1]}" --metrics-addr "127.0.0.1:${ports[i + 2]}" \
		--data-dir "$BENCH_TMP/n$i" --peers "$peers" --log-level warn ${KVNODE_FLAGS:-} >>"$BENCH_TMP/n$i.log" 2>&1 &
	pids+=($!)
done
export RINGKV_ADDR=127.0.0.1:${ports[0]}
wait_until "ringkv did not elect a primary for every partition" "$BENCH_TMP" "${pids[*]}" ringkv_ready
bin/kvctl bench --load --duration 0 --clients "$clients" --keys "$keys" --value-size 100 >/dev/null 2>&1

# scrape FILE writes every node's /metrics into FILE.
scrape() {
	local i
	: >"$1"
	for i in 3 4 5; do curl -fsS "http://127.0.0.1:${ports[i]}/metrics" >>"$1"; done
}

echo "ringkv $(git rev-parse --short HEAD) at $(date -u '+%F %T') UTC; $clients clients, $keys keys, 100-byte values, ${secs} s per run; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$repeats"); do
	scrape "$BENCH_TMP/before"
	bin/kvctl bench --workload W --write-consistency fast --clients "$clients" --keys "$keys" --value-size 100 --duration "${secs}s" 2>/dev/null | tail -n 2
	scrape "$BENCH_TMP/after"
	awk -v run="$r" '
		function bound(line) { match(line, /le="[^"]+"/); return substr(line, RSTART + 4, RLENGTH - 5) }
		FNR == 1 { file++ }
		/^ringkv_fast_write_replication_seconds_bucket/ {
			le = bound($0); if (!(le in seen)) { seen[le] = 1; order[n++] = le }
			count[le] += (file == 1 ? -$2 : $2)
		}
		file == 2 && /^ringkv_fast_write_journal_records/ { if ($2 > deepest) deepest = $2 }
		END {
			total = count["+Inf"]
			split("0.5 0.9 0.99 0.999", qs, " ")
			line = sprintf("run %d: %d fast writes replicated; lag", run, total)
			for (k = 1; k <= 4; k++) {
				for (j = 0; j < n; j++) if (count[order[j]] >= qs[k] * total) break
				v = order[j] == "+Inf" ? "+Inf" : sprintf("%.1f ms", order[j] * 1000)
				line = line sprintf(" p%s <= %s", qs[k] * 100, v)
			}
			print line sprintf("; deepest journal at the end %d records", deepest)
		}' "$BENCH_TMP/before" "$BENCH_TMP/after"
done
