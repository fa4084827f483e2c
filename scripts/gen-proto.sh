#!/usr/bin/env bash
# Regenerates the Go code of carelog's gRPC API from proto/**/*.proto.
#
#   scripts/gen-proto.sh          lint the .proto files and regenerate the
#                                 committed *.pb.go and *_grpc.pb.go files
#   scripts/gen-proto.sh --check  regenerate into a temporary directory and
#                                 fail if the committed files differ
#
# Needs only Go and the Go module proxy: buf (a pure-Go protobuf compiler)
# and the protoc-gen-go / protoc-gen-go-grpc plugins are built with `go run`
# at the versions pinned here and in proto/buf.gen.yaml. No protoc, no remote
# plugins. Building carelog never runs this; the generated code is committed.
set -euo pipefail

BUF_VERSION=v1.75.0
# Pinned in proto/buf.gen.yaml; repeated here only to check them.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/proto"

for want in "protoc-gen-go@$PROTOC_GEN_GO_VERSION" "protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"; do
	if ! grep -q "/$want\"" buf.gen.yaml; then
		echo "gen-proto: proto/buf.gen.yaml does not pin $want; keep it and this script in step" >&2
		exit 1
	fi
done
# Generated code must match the protobuf runtime the module builds with.
runtime=$(cd "$root" && go list -m -f '{{.Version}}' google.golang.org/protobuf)
if [[ "$runtime" != "$PROTOC_GEN_GO_VERSION" ]]; then
	echo "gen-proto: go.mod has google.golang.org/protobuf $runtime but protoc-gen-go is pinned at" \
		"$PROTOC_GEN_GO_VERSION; bump the pin in this script and proto/buf.gen.yaml" >&2
	exit 1
fi

buf() { go run "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION" "$@"; }

buf lint

if [[ "${1:-}" == "--check" ]]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	buf generate -o "$tmp"
	status=0
	while IFS= read -r f; do
		if ! cmp -s "$tmp/$f" "$f"; then
			echo "gen-proto: proto/$f is out of date; run scripts/gen-proto.sh" >&2
			status=1
		fi
	done < <(cd "$tmp" && find . -name '*.go' | sort)
	while IFS= read -r f; do
		if [[ ! -e "$tmp/$f" ]]; then
			echo "gen-proto: proto/$f is not generated from any .proto; remove it" >&2
			status=1
		fi
	done < <(find . -name '*.pb.go' | sort)
	exit $status
fi

buf generate
echo "gen-proto: regenerated Go code under proto/"
