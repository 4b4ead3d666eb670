#!/usr/bin/env bash
# Builds the ringkv container image (deploy/Dockerfile, FROM scratch):
# static kvnode and kvctl are compiled on the host into a temporary build
# context, so the only network it needs is the Go module proxy.
#
#   scripts/build-image.sh [TAG]      # default ringkv:dev, or $IMAGE
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-${IMAGE:-ringkv:dev}}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

version=$(git describe --always --dirty 2>/dev/null || echo unknown)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
ldflags="-s -w"
for c in kvnode kvctl; do
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "$ldflags" -o "$ctx/$c" "./cmd/$c"
done
mkdir "$ctx/data"
cp deploy/Dockerfile "$ctx/Dockerfile"

docker build -t "$tag" \
	--build-arg VERSION="$version" \
	--build-arg REVISION="$revision" \
	--build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	"$ctx"
echo "built $tag ($version)"
