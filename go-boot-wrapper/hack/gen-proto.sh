#!/usr/bin/env bash
# Regenerates internal/recyclerpb from the project's one protocol file,
# recycler-core/src/main/proto/recycler/v1/slot_control.proto (also the source of the Java stubs).
#
#   hack/gen-proto.sh          regenerate in place
#   hack/gen-proto.sh --check  fail if the committed stubs differ from what the .proto generates
#
# protoc comes from Maven (the same artifact the Java build uses); the Go generators from the Go module proxy,
# pinned to the versions the Beam Go SDK v2.70.0 builds with.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/.." && pwd)
protoc_version=3.25.5
beam_version=2.70.0
protobuf_java_version=3.25.9
protoc_gen_go=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.10
protoc_gen_go_grpc=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1

tools="${RECYCLER_TOOLS_DIR:-$HOME/.cache/recycler-tools}"
mkdir -p "$tools/bin"
protoc="$tools/bin/protoc-$protoc_version"
if [ ! -x "$protoc" ]; then
  mvn -q -B dependency:copy -Dartifact="com.google.protobuf:protoc:$protoc_version:exe:linux-x86_64" \
    -DoutputDirectory="$tools" -Dmdep.stripVersion=false >/dev/null
  mv "$tools/protoc-$protoc_version-linux-x86_64.exe" "$protoc"
  chmod +x "$protoc"
fi
# slot_control.proto imports Beam's model protos (from the beam-model jars, as the Java build does) and protobuf's
# well-known types (from the protobuf-java jar); their Go code is the Beam Go SDK's, named by their go_package.
includes="$tools/protos-beam-$beam_version"
if [ ! -f "$includes/.complete" ]; then
  rm -rf "$includes"
  for a in org.apache.beam:beam-model-pipeline:$beam_version org.apache.beam:beam-model-fn-execution:$beam_version \
      com.google.protobuf:protobuf-java:$protobuf_java_version; do
    mvn -q -B dependency:unpack -Dartifact="$a" -DoutputDirectory="$includes" -Dmdep.unpack.includes='**/*.proto' >/dev/null
  done
  touch "$includes/.complete"
fi
GOBIN="$tools/bin" go install "$protoc_gen_go"
GOBIN="$tools/bin" go install "$protoc_gen_go_grpc"

out="$here/internal/recyclerpb"
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
PATH="$tools/bin:$PATH" "$protoc" \
  -I "$root/recycler-core/src/main/proto" -I "$includes" \
  --go_out="$out" --go_opt=module=recycler.dev/go-boot-wrapper/internal/recyclerpb \
  --go-grpc_out="$out" --go-grpc_opt=module=recycler.dev/go-boot-wrapper/internal/recyclerpb \
  recycler/v1/slot_control.proto

if [ "${1:-}" = "--check" ]; then
  if ! diff -ru "$here/internal/recyclerpb" "$out" >/dev/null; then
    diff -ru "$here/internal/recyclerpb" "$out" | head -40 >&2
    echo "go-boot-wrapper/internal/recyclerpb is stale: run go-boot-wrapper/hack/gen-proto.sh and commit the result" >&2
    exit 1
  fi
  echo "recyclerpb is current"
fi
