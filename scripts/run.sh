#!/usr/bin/env bash
# Starts a 3-node ringkv cluster on 127.0.0.1:7001-7003 (data under ./data,
# /healthz on 9101-9103), prefixes each node's log lines with its id, and
# stops all three on Ctrl-C. Run it through `make run`, which builds first.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003
pids=()
stop() {
	trap - INT TERM EXIT
	echo "stopping ringkv..."
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	wait || true
}
trap stop INT TERM EXIT
for i in 1 2 3; do
	mkdir -p "data/n$i"
	bin/kvnode --id "n$i" --listen "127.0.0.1:700$i" --metrics-addr "127.0.0.1:910$i" \
		--data-dir "data/n$i" --peers "$peers" ${KVNODE_FLAGS:-} \
		> >(sed -u "s/^/[n$i] /") 2>&1 &
	pids+=($!)
done
echo "ringkv: 3 nodes on 127.0.0.1:7001-7003; try: bin/kvctl put hello world && bin/kvctl get hello   (Ctrl-C stops)"
wait
