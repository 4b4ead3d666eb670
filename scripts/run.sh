#!/usr/bin/env bash
# Starts a local ringkv cluster. Until kvnode exists this only reports what was built.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x bin/kvnode ]; then
	echo "ringkv: storage layer built and tested (wal/, fsm/); the kvnode daemon does not exist yet, so there is no cluster to start."
	exit 0
fi
