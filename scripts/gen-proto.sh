#!/usr/bin/env bash
# Regenerates proto/ringkvpb from proto/ringkv/v1/*.proto. The generated files
# are committed; run this (`make proto`) after editing a .proto file.
#
# The plugins are pinned and installed into ./bin/tools, not GOPATH, so the
# output depends only on this script and on protoc. protoc comes from Debian's
# protobuf-compiler; the committed files were made with libprotoc 3.21.12
# (bookworm), whose version is recorded in each file's header.
set -euo pipefail
cd "$(dirname "$0")/.."

# protoc-gen-go tracks google.golang.org/protobuf in go.mod.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
EXPECTED_PROTOC="libprotoc 3.21.12"

if ! command -v protoc >/dev/null 2>&1; then
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then
		sudo="sudo"
	fi
	$sudo apt-get update
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y protobuf-compiler
fi
if [ "$(protoc --version)" != "$EXPECTED_PROTOC" ]; then
	echo "gen-proto: warning: $(protoc --version) differs from $EXPECTED_PROTOC; generated headers will change" >&2
fi

tools="$PWD/bin/tools"
mkdir -p "$tools"
GOBIN="$tools" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
GOBIN="$tools" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"

module=github.com/ringkv/ringkv
rm -f proto/ringkvpb/*.pb.go
PATH="$tools:$PATH" protoc \
	--proto_path=proto \
	--go_out=. --go_opt="module=${module}" \
	--go-grpc_out=. --go-grpc_opt="module=${module}" \
	proto/ringkv/v1/*.proto
echo "gen-proto: wrote $(ls proto/ringkvpb/*.pb.go | wc -l) files to proto/ringkvpb"
