#!/usr/bin/env bash
# The transport's benchmark (issue 3), run by `make bench`:
#  1. echo load through the C client at 1,000 connections, 64 B and 1 KiB,
#     io_uring vs epoll in the same run: messages/s, p50/p99, and the ratio;
#  2. resident memory per idle connection at 10,000 connections, plaintext
#     and TLS (targets ≤ 8 KiB and ≤ 24 KiB).
# Server (aegisd --echo, one worker) and client are separate processes, as
# this machine allows 20,000 open files per process. Everything is on
# loopback and bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
CONNECTIONS=${CONNECTIONS:-1000}
IDLE=${IDLE:-10000}
OUT=.build-c/bench
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

CFLAGS="-std=gnu17 -O2 -D_GNU_SOURCE -I CSources/AegisCore/include -I CSources/AegisCore/src -I CSources/AegisIO/include -I CSources/AegisIO/src"
SRCS="CSources/AegisCore/src/*.c CSources/AegisIO/src/*.c"
LIBS="-lsodium -lssl -lcrypto -luring -lpthread"
for tool in echo_load idle_conns; do
    # shellcheck disable=SC2086
    cc $CFLAGS $SRCS "Benchmarks/tools/$tool.c" $LIBS -o "$OUT/$tool"
done
swift build -c release --product aegisd >/dev/null
AEGISD=.build/release/aegisd

port_free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() { # backend tls?
    local backend=$1 tls=$2 port
    port=$(port_free)
    local dir; dir=$(mktemp -d)
    local args=(--echo --listen "127.0.0.1:$port" --data-dir "$dir" --io-backend "$backend" --workers 1)
    [ "$tls" = tls ] || args+=(--plaintext)
    "$AEGISD" "${args[@]}" > "$OUT/server.log" 2>&1 &
    SERVER_PID=$!
    SERVER_PORT=$port
    for _ in $(seq 100); do grep -q "I/O backend" "$OUT/server.log" 2>/dev/null && break; sleep 0.1; done
    PIN=$(sed -nE 's/.*fingerprint: ([0-9a-f]{64}).*/\1/p' "$OUT/server.log")
}

stop_server() { kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

echo "== echo load: $CONNECTIONS connections, ${SECONDS_PER_RUN} s per run, 1 message in flight each"
declare -A RATE
for size in 64 1024; do
    for backend in io_uring epoll; do
        start_server "$backend" plain
        "$OUT/echo_load" --port "$SERVER_PORT" --connections "$CONNECTIONS" --size "$size" \
            --seconds "$SECONDS_PER_RUN" --backend "${backend/io_/}" --sources 4 > "$OUT/echo.out" 2>&1 || true
        stop_server
        json=$(grep '^{' "$OUT/echo.out" | tail -n 1)
        rate=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(round(d["messages_per_s"]))' "$json")
        p50=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["p50_us"])' "$json")
        p99=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["p99_us"])' "$json")
        errs=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["errors"])' "$json")
        RATE[$size-$backend]=$rate
        printf "  %-8s %5s B  %8s msg/s  p50 %6s us  p99 %6s us  errors %s\n" "$backend" "$size" "$rate" "$p50" "$p99" "$errs"
    done
    python3 -c 'import sys; u,e=float(sys.argv[1]),float(sys.argv[2]); print(f"  io_uring / epoll at {sys.argv[3]} B: {u/e:.2f}" + ("" if u >= e else "  (io_uring slower: see the noise note in docs/benchmarks.md)"))' \
        "${RATE[$size-io_uring]}" "${RATE[$size-epoll]}" "$size"
done

echo "== resident memory per idle connection: $IDLE connections"
for mode in plain tls; do
    for backend in io_uring epoll; do
        start_server "$backend" "$mode"
        before=$(rss_kib "$SERVER_PID")
        extra=()
        [ "$mode" = tls ] && extra=(--tls --pin "$PIN")
        "$OUT/idle_conns" --port "$SERVER_PORT" --connections "$IDLE" --hold 4 --sources 8 "${extra[@]}" \
            > "$OUT/idle.out" 2>&1 &
        client=$!
        for _ in $(seq 300); do grep -q "opened" "$OUT/idle.out" 2>/dev/null && break; sleep 0.1; done
        sleep 1
        after=$(rss_kib "$SERVER_PID")
        wait "$client" || true
        stop_server
        opened=$(sed -nE 's/.*opened ([0-9]+)\/.*/\1/p' "$OUT/idle.out" | head -n 1)
        python3 - "$before" "$after" "${opened:-0}" "$backend" "$mode" <<'PY'
import sys
b, a, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
backend, mode = sys.argv[4], sys.argv[5]
target = 8 if mode == "plain" else 24
per = (a - b) / max(n, 1)
verdict = "PASS" if per <= target and n > 0 else "OVER"
print(f"  {mode:5s} {backend:8s} {n} open: RSS {b} -> {a} KiB = {per:.2f} KiB per connection (target <= {target}) {verdict}")
PY
    done
done
