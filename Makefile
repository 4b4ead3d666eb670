# ringkv — see README.md. Every target installs what it needs (pinned) or
# uses committed generated files, so a fresh machine with Go is enough.

GO        ?= go
BIN       := bin
PKGS      := ./...
FUZZTIME  ?= 10s
BENCHTIME ?= 2s

.PHONY: all build test vet bench bench-cluster bench-engine bench-vs-etcd bench-scaleout bench-split bench-fast-lag fuzz run clean proto chaos chaos-short check-deploy image e2e-docker

all: build

build:
	@mkdir -p $(BIN)
	@for c in $(wildcard cmd/*); do \
		if ls $$c/*.go >/dev/null 2>&1; then \
			echo "go build -o $(BIN)/$$(basename $$c) ./$$c"; \
			CGO_ENABLED=0 $(GO) build -o $(BIN)/$$(basename $$c) ./$$c || exit 1; \
		fi; \
	done

vet:
	$(GO) vet $(PKGS)

test: vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(MAKE) chaos-short

# Fault-injection campaigns against real kvnode processes (test/chaos). Each
# replays test/chaos/testdata/seeds.txt, then one campaign with CHAOS_SEED or
# a random seed; the summary prints the seed that reproduces the schedule.
# CHAOS_FLAGS=-chaos.docker runs against the compose cluster instead.
CHAOS_SEED ?= 0
CHAOS_NODES ?= 3
CHAOS_FLAGS ?=
chaos:
	$(GO) test -count=1 -timeout 30m -run Chaos -v ./test/chaos -chaos.duration 5m -chaos.seed $(CHAOS_SEED) -chaos.nodes $(CHAOS_NODES) $(CHAOS_FLAGS)

chaos-short:
	$(GO) test -count=1 -timeout 15m -run Chaos -v ./test/chaos -chaos.duration 60s -chaos.seed $(CHAOS_SEED) -chaos.nodes $(CHAOS_NODES)

bench:
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) ./wal ./fsm ./internal/storage ./ring ./transport
	$(GO) test -run '^$$' -bench StrongPut64 -benchtime 20000x ./node

# Real processes: 3 kvnodes on free loopback ports, a few `kvctl bench` rows
# (ROW_SECONDS, CLIENTS, KEYS).
bench-cluster:
	@./scripts/bench-cluster.sh

# The storage engine's targets on 3 kvnodes (about an hour with the defaults;
# the bigdata table needs root for its cgroups). Subset: TABLES="growth
# catchup bigdata", GROWTH_KEYS, CATCHUP_KEYS, BIG_KEYS (scripts/bench-engine.sh).
bench-engine:
	@./scripts/bench-engine.sh

# Side by side with a 3-member etcd (installs etcd-server/etcd-client/jq from
# Debian if missing; builds etcd's benchmark tool pinned into bin/tools).
# Subset: ROWS="strong fast quorum local" CLIENTS="1 16 64" REPEATS=3 ROW_SECONDS=15.
bench-vs-etcd:
	@./scripts/bench-vs-etcd.sh

bench-scaleout:
	@./scripts/bench-scaleout.sh

# The write unavailability of a splitting partition, on real processes
# (test/e2e TestBenchSplit: 3 nodes, 4 -> 8 partitions, 64 strong writers).
bench-split:
	$(GO) test -count=1 -timeout 20m -run TestBenchSplit -v ./test/e2e -split.bench

# Replication lag of fast writes under a 64-client load (scripts/bench-fast-lag.sh).
bench-fast-lag:
	scripts/bench-fast-lag.sh

# Runs every fuzz target in the tree for FUZZTIME each.
fuzz:
	@./scripts/fuzz.sh $(FUZZTIME)

# The container image ringkv:dev, FROM scratch (no registry needed).
image:
	@./scripts/build-image.sh

# Compose cluster against the real Docker engine: kills, partitions,
# catch-up. Skips (exit 0) when no Docker engine answers.
e2e-docker:
	@./scripts/e2e-docker.sh

# Validates the Prometheus config and recording rules (installs Debian's
# prometheus package for promtool if it is missing).
check-deploy:
	@command -v promtool >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)
	cd deploy && promtool check config prometheus.yml && promtool check rules prometheus-rules.yml

proto:
	@./scripts/gen-proto.sh

run: build
	@./scripts/run.sh

clean:
	rm -rf $(BIN) data
