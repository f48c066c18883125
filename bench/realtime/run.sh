#!/usr/bin/env bash
# Runs the realtime benchmark: 10,000 WebSocket connections over 2 hub
# nodes (Redis broker at 127.0.0.1:6379), a channel broadcast at a fixed
# rate; and, when a centrifugo binary is found (CENTRIFUGO=path, or built
# with `GOBIN=/tmp/cfbin go install github.com/centrifugal/centrifugo/v6@v6.9.1`),
# the same scenario against two Centrifugo nodes with the Redis engine.
# Extra arguments go to the benchmark (see -h).
set -euo pipefail
cd "$(dirname "$0")/../.."
# 10,000 client sockets in the load generator, 5,000 in each node.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt 12000 ]; then
  echo "ulimit -n is $(ulimit -n); 10,000 connections need at least 12000" >&2
  exit 1
fi
bin=$(mktemp -d)/realtime-bench
go build -o "$bin" ./bench/realtime
cf=${CENTRIFUGO:-/tmp/cfbin/centrifugo}
args=()
if [ -x "$cf" ]; then
  args+=(-centrifugo "$cf")
else
  echo "no centrifugo binary at $cf: running scaleout only" >&2
fi
exec "$bin" "${args[@]}" "$@"
