# ringkv — see README.md. Every target installs what it needs (pinned) or
# uses committed generated files, so a fresh machine with Go is enough.

GO        ?= go
BIN       := bin
PKGS      := ./...
FUZZTIME  ?= 10s
BENCHTIME ?= 2s

.PHONY: all build test vet bench fuzz run clean proto

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

bench:
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) ./wal ./fsm ./ring ./transport
	$(GO) test -run '^$$' -bench StrongPut64 -benchtime 20000x ./node

# Runs every fuzz target in the tree for FUZZTIME each.
fuzz:
	@./scripts/fuzz.sh $(FUZZTIME)

proto:
	@./scripts/gen-proto.sh

run: build
	@./scripts/run.sh

clean:
	rm -rf $(BIN) data
