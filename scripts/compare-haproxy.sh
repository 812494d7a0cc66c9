#!/usr/bin/env bash
# Compares the grid's front end (charge_request -> load_balancer) with HAProxy
# in front of the same four substations, on this machine, in one run.
#
#   scripts/compare-haproxy.sh [--secs 8] [--rounds 3] [--connections 64]
#                              [--threads 2] [--workers 1] [--no-build]
#                              [--no-install] [--no-balancer-alone]
#                              [--unbatched]
#
# Starts four substations (300/500/800/1200 kW), one load_balancer, one
# charge_request and one HAProxy (two frontends: `balance leastconn` and
# `balance random(2)`, both weighted by capacity, `retry-on 503
# conn-failure`, `option redispatch`, 3 retries, health checks every second)
# on free 127.0.0.1 ports, then runs wrk with the same POST body against each
# target for --secs seconds, --rounds rounds, the order rotated every round so
# that no target always runs first. Every target gets one warm-up run first.
#
# For each run it reads utime+stime of the front-end processes from
# /proc/<pid>/stat (entry and balancer together for ours, HAProxy for
# HAProxy) and divides the delta by the requests wrk completed. The
# substations and wrk run in every case and are not counted.
#
# --workers sets HTTP_WORKERS of the entry and the balancer (default 1: on a
# two-core machine shared with four substations, HAProxy and wrk, one worker
# each cost less CPU per request; 0 keeps actix's default, one per core).
# HAProxy runs with its default thread count.
#
# The entry and the balancer batch the requests that queue behind those in
# flight (FORWARD_BATCH_MAX, default 64). --unbatched adds a second entry and
# balancer with FORWARD_BATCH_MAX=1 over the same substations, as one more
# target, to show what batching buys in the same run.
#
# Requests ask for 1 kW and 0.01 kWh with TIME_SCALE=100000, so a session
# ends within a millisecond and capacity never refuses: the run measures the
# cost of the hops, not admission. Non-2xx answers are counted as refusals.
#
# Prints a Markdown table: median throughput, median per-round ratio to
# HAProxy (each round's runs are side by side), CPU microseconds per request,
# refusals. Needs wrk and haproxy (installed with apt-get if missing, when
# run as root, unless --no-install). Cleans up its processes on exit.
set -euo pipefail

SECS=8
ROUNDS=3
CONNS=64
THREADS=2
WORKERS=1
BUILD=1
INSTALL=1
BALANCER_ALONE=1
UNBATCHED=0
while [ $# -gt 0 ]; do
    case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-install) INSTALL=0; shift ;;
    --no-balancer-alone) BALANCER_ALONE=0; shift ;;
    --unbatched) UNBATCHED=1; shift ;;
    -h | --help) sed -n '2,41p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/compare-haproxy.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() {
    local tool=$1 package=$2
    command -v "$tool" >/dev/null 2>&1 && return 0
    if [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $package" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
    fi
    command -v "$tool" >/dev/null 2>&1 || {
        echo "compare-haproxy: $tool is missing (apt-get install $package)" >&2
        exit 1
    }
}
need wrk wrk
need haproxy haproxy
need curl curl

if [ "$BUILD" = 1 ]; then
    cargo build --release --bin substation --bin load_balancer --bin charge_request >&2
fi

# A port nothing listens on and that we have not handed out yet. The kernel
# picks ephemeral ports from the top of the range, so stay below it.
TAKEN=" "
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 12000))
        case "$TAKEN" in *" $port "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            TAKEN="$TAKEN$port "
            echo "$port"
            return
        fi
    done
}

wait_health() {
    local url=$1 i
    for i in $(seq 1 200); do
        curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "compare-haproxy: $url did not become healthy; logs:" >&2
    tail -n 5 "$WORK"/*.log >&2
    exit 1
}

# start NAME ENV... -- CMD...: runs CMD in the background with its log in $WORK.
start() {
    local name=$1
    shift
    local envs=()
    while [ "$1" != "--" ]; do
        envs+=("$1")
        shift
    done
    shift
    env "${envs[@]}" "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

CAPACITIES=(300 500 800 1200)
SUB_PORTS=()
SUB_URLS=()
for i in 0 1 2 3; do
    port=$(free_port)
    SUB_PORTS+=("$port")
    SUB_URLS+=("http://127.0.0.1:$port")
    start "substation$((i + 1))" RUST_LOG=warn SUBSTATION_ID="substation$((i + 1))" \
        LISTEN_ADDR="127.0.0.1:$port" CAPACITY_KW="${CAPACITIES[$i]}" TIME_SCALE=100000 \
        -- "$BIN/substation"
done
for url in "${SUB_URLS[@]}"; do wait_health "$url/health"; done

FRONT_ENV=(RUST_LOG=warn)
[ "$WORKERS" != 0 ] && FRONT_ENV+=(HTTP_WORKERS="$WORKERS")
LB_PORT=$(free_port)
start load_balancer "${FRONT_ENV[@]}" LISTEN_ADDR="127.0.0.1:$LB_PORT" \
    SUBSTATIONS="$(IFS=,; echo "${SUB_URLS[*]}")" -- "$BIN/load_balancer"
LB_PID=$LAST_PID
ENTRY_PORT=$(free_port)
start charge_request "${FRONT_ENV[@]}" LISTEN_ADDR="127.0.0.1:$ENTRY_PORT" \
    LOAD_BALANCER_URL="http://127.0.0.1:$LB_PORT" -- "$BIN/charge_request"
ENTRY_PID=$LAST_PID
wait_health "http://127.0.0.1:$LB_PORT/health"
wait_health "http://127.0.0.1:$ENTRY_PORT/health"
if [ "$UNBATCHED" = 1 ]; then
    LB1_PORT=$(free_port)
    start load_balancer_unbatched "${FRONT_ENV[@]}" FORWARD_BATCH_MAX=1 \
        LISTEN_ADDR="127.0.0.1:$LB1_PORT" SUBSTATIONS="$(IFS=,; echo "${SUB_URLS[*]}")" \
        -- "$BIN/load_balancer"
    LB1_PID=$LAST_PID
    ENTRY1_PORT=$(free_port)
    start charge_request_unbatched "${FRONT_ENV[@]}" FORWARD_BATCH_MAX=1 \
        LISTEN_ADDR="127.0.0.1:$ENTRY1_PORT" LOAD_BALANCER_URL="http://127.0.0.1:$LB1_PORT" \
        -- "$BIN/charge_request"
    ENTRY1_PID=$LAST_PID
    wait_health "http://127.0.0.1:$LB1_PORT/health"
    wait_health "http://127.0.0.1:$ENTRY1_PORT/health"
fi

HA_LEAST=$(free_port)
HA_RANDOM=$(free_port)
servers() {
    local i
    for i in 0 1 2 3; do
        # Weights in proportion to capacity (kW / 10).
        echo "    server substation$((i + 1)) 127.0.0.1:${SUB_PORTS[$i]} weight $((CAPACITIES[i] / 10)) check inter 1s"
    done
}
cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    timeout connect 250ms
    timeout client 10s
    timeout server 1s
    retries 3
    option redispatch 1
    retry-on 503 conn-failure
    option httpchk GET /health

frontend leastconn
    bind 127.0.0.1:$HA_LEAST
    default_backend leastconn

frontend random2
    bind 127.0.0.1:$HA_RANDOM
    default_backend random2

backend leastconn
    balance leastconn
$(servers)

backend random2
    balance random(2)
$(servers)
EOF
haproxy -c -q -f "$WORK/haproxy.cfg"
start haproxy -- haproxy -db -f "$WORK/haproxy.cfg"
HA_PID=$LAST_PID
wait_health "http://127.0.0.1:$HA_LEAST/health"
wait_health "http://127.0.0.1:$HA_RANDOM/health"

cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"power_kw": 1, "energy_kwh": 0.01}'
wrk.headers["Content-Type"] = "application/json"
EOF

# Targets: name, URL, PIDs whose CPU counts.
NAMES=(grid haproxy_leastconn haproxy_random2)
URLS=("http://127.0.0.1:$ENTRY_PORT/request_charge" "http://127.0.0.1:$HA_LEAST/charge"
    "http://127.0.0.1:$HA_RANDOM/charge")
CPU_PIDS=("$ENTRY_PID $LB_PID" "$HA_PID" "$HA_PID")
if [ "$BALANCER_ALONE" = 1 ]; then
    NAMES+=(balancer_alone)
    URLS+=("http://127.0.0.1:$LB_PORT/route")
    CPU_PIDS+=("$LB_PID")
fi
LABELS=("entry -> balancer -> substation" "HAProxy leastconn -> substation"
    "HAProxy random(2) -> substation")
[ "$BALANCER_ALONE" = 1 ] && LABELS+=("balancer -> substation (no entry)")
if [ "$UNBATCHED" = 1 ]; then
    NAMES+=(grid_unbatched)
    URLS+=("http://127.0.0.1:$ENTRY1_PORT/request_charge")
    CPU_PIDS+=("$ENTRY1_PID $LB1_PID")
    LABELS+=("entry -> balancer -> substation, batching off")
fi

TCK=$(getconf CLK_TCK)
# CPU ticks (utime + stime) of the given PIDs together.
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + t))
    done
    echo "$total"
}

# Milliseconds from a wrk latency ("812.00us", "1.53ms", "1.02s").
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.2f", n }'; }

# run INDEX SECS: one wrk run; prints "req_per_s requests non2xx
# socket_errors cpu_us_per_req cpu_us_per_req_of_the_first_pid p50_ms
# p99_ms".
run() {
    local i=$1 secs=$2 pids before after first0 first1 out reqs rps non2xx errs
    read -r -a pids <<<"${CPU_PIDS[$i]}"
    before=$(cpu_ticks "${pids[@]}")
    first0=$(cpu_ticks "${pids[0]}")
    out=$(wrk --latency -t"$THREADS" -c"$CONNS" -d"${secs}s" -s "$WORK/post.lua" "${URLS[$i]}")
    after=$(cpu_ticks "${pids[@]}")
    first1=$(cpu_ticks "${pids[0]}")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    errs=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    awk -v r="$rps" -v n="$reqs" -v x="${non2xx:-0}" -v e="${errs:-0}" \
        -v c="$((after - before))" -v f="$((first1 - first0))" -v tck="$TCK" \
        -v p50="$p50" -v p99="$p99" \
        'BEGIN { us = (n > 0 ? 1e6 / tck / n : 0); printf "%s %d %d %d %.1f %.1f %s %s\n", r, n, x, e, c * us, f * us, p50, p99 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

N=${#NAMES[@]}
echo "warming up each target for 2 s" >&2
for i in $(seq 0 $((N - 1))); do run "$i" 2 >/dev/null; done

: >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
    for k in $(seq 0 $((N - 1))); do
        i=$(((k + round - 1) % N))
        line=$(run "$i" "$SECS")
        echo "$round ${NAMES[$i]} $line" >>"$WORK/results"
        echo "round $round ${NAMES[$i]}: $line (req/s requests non-2xx socket-errors cpu-us/req first-pid-us/req p50-ms p99-ms)" >&2
    done
done

# field NAME COLUMN: that column of every round of NAME.
field() { awk -v n="$1" -v c="$2" '$2 == n { print $c }' "$WORK/results"; }
# ratio_rounds A B: A's throughput over B's, per round.
ratio_rounds() {
    awk -v a="$1" -v b="$2" '$2 == a { x[$1] = $3 } $2 == b { y[$1] = $3 }
        END { for (r in x) if (y[r] > 0) print x[r] / y[r] }' "$WORK/results"
}

echo
workers=$([ "$WORKERS" = 0 ] && echo "one per core" || echo "$WORKERS")
echo "$ROUNDS rounds x ${SECS} s, wrk -t$THREADS -c$CONNS, HTTP workers of entry and balancer: $workers, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| target | req/s (median) | grid / this (median of rounds) | front-end CPU us/request (median) | latency p50 / p99 ms (median) | non-2xx | socket errors |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for i in $(seq 0 $((N - 1))); do
    name=${NAMES[$i]}
    rps=$(field "$name" 3 | median)
    cpu=$(field "$name" 7 | median)
    non2xx=$(field "$name" 5 | awk '{ s += $1 } END { print s + 0 }')
    errs=$(field "$name" 6 | awk '{ s += $1 } END { print s + 0 }')
    latency="$(field "$name" 9 | median) / $(field "$name" 10 | median)"
    if [ "$name" = grid ]; then
        ratio="-"
    else
        ratio=$(ratio_rounds grid "$name" | median | awk '{ printf "%.2f", $1 }')
    fi
    if [ "$name" = grid ] || [ "$name" = grid_unbatched ]; then
        entry=$(field "$name" 8 | median)
        cpu=$(awk -v c="$cpu" -v e="$entry" 'BEGIN { printf "%.1f (entry %.1f + balancer %.1f)", c, e, c - e }')
    else
        cpu=$(printf '%.1f' "$cpu")
    fi
    printf '| %s | %.0f | %s | %s | %s | %s | %s |\n' "${LABELS[$i]}" "$rps" "$ratio" "$cpu" "$latency" "$non2xx" "$errs"
done
echo
echo "Front-end CPU: charge_request + load_balancer for the grid, load_balancer alone for"
echo "the balancer row, the HAProxy process for HAProxy; substations and wrk are not counted."
