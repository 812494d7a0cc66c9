#!/usr/bin/env bash
# End-to-end run of the compose stack, through its published ports only.
#
#   scripts/e2e-compose.sh
#
# 1. builds any missing base image with scripts/airgap-images.sh, the host's
#    test clients (causal_demo, rush_hour) with cargo, and the stack's image
#    with compose from the unchanged Dockerfile;
# 2. starts every service except grafana (which cannot be built without a
#    registry; tests/monitoring_static.rs checks its side) and waits for every
#    health check;
# 3. runs causal_demo; writes on every KV node and reads each write back from
#    every node with its causal context; runs a short rush_hour and checks that
#    every substation took sessions;
# 4. asks Prometheus that every target is up and that every expression of
#    every dashboard returns at least one series;
# 5. faults, writing all along: disconnects one KV node from the network and
#    reconnects it; stops and starts another; kills one with SIGKILL under
#    write load and checks every acknowledged write is on every node; wipes
#    one's volume and lets it rebuild from its peers; stops and starts all
#    three and checks the data is unchanged; after each, checks that
#    all nodes converge (same delivered vector clock and same store). Kills a
#    substation during a rush hour (no request may fail), and stops the
#    balancer (the entry service must answer 503 with Retry-After) and
#    starts it again (requests must succeed). These checks all run even when
#    one fails;
# 6. tears the stack down with its volumes, also on failure or Ctrl-C.
#
# Skips (exit 0, with a message) when no Docker engine is reachable.
# Environment:
#   E2E_COMPOSE      compose command (default: `docker compose` if present,
#                    else `docker-compose`)
#   E2E_PROJECT      compose project name (default: causalgride2e)
#   E2E_RUSH_ARGS    extra rush_hour arguments
#   E2E_KEEP=1       leave the stack running afterwards (for debugging)
#   E2E_PORT_WAIT    seconds to wait for the published ports to be freed by
#                    another run of the stack (default 900)
#   E2E_SCOPE=smoke  steps 1, 2, the KV writes and reads, the Prometheus
#                    targets and step 6 only, reusing causal-grid:latest if
#                    it exists: a second, shorter pass with another compose
#                    implementation over the same images
set -euo pipefail

cd "$(dirname "$0")/.."
E2E_NAME=e2e-compose
# shellcheck source=scripts/e2e-lib.sh
. scripts/e2e-lib.sh
FAULTS=()
require_docker

if [ -n "${E2E_COMPOSE:-}" ]; then
    read -r -a COMPOSE <<<"$E2E_COMPOSE"
elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
export COMPOSE_PROJECT_NAME=${E2E_PROJECT:-causalgride2e}
SCOPE=${E2E_SCOPE:-full}
case $SCOPE in full | smoke) ;; *) fail "E2E_SCOPE must be full or smoke, not $SCOPE" ;; esac
# The run must not depend on a developer's .env or shell.
export CLUSTER_SECRET=e2e-cluster-secret-$$
dc() { "${COMPOSE[@]}" "$@"; }

NODES=(http://localhost:5001 http://localhost:5002 http://localhost:5003)
ENTRY=http://localhost:6000
BALANCER=http://localhost:7000
SUB1=http://localhost:8001
# PUT /limit's token for this run's substations.
export GRID_ADMIN_TOKEN=e2e-operator-token
PROM=http://localhost:9090
PY=python3

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ]; then
        echo
        echo "== failure diagnostics"
        dc ps || true
        dc logs --no-color --tail=40 2>&1 | tail -200 || true
    fi
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        echo "E2E_KEEP=1: leaving the stack up (${COMPOSE[*]} down -v to remove it)"
    else
        echo
        echo "== tearing down (containers, network, volumes)"
        dc down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || dc down -v --remove-orphans || true
    fi
    echo
    echo "== summary ($(($(date +%s) - START)) s)"
    local c
    for c in "${CHECKED[@]}"; do echo "  checked: $c"; done
    for c in "${FAULTS[@]}"; do echo "  FAILED: $c"; done
    if [ "$rc" -eq 0 ]; then
        echo "e2e-compose: passed"
    else
        echo "e2e-compose: FAILED (exit $rc)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
COMPOSE_VERSION=$("${COMPOSE[@]}" version --short 2>/dev/null || true)
say "compose: ${COMPOSE[*]} ($COMPOSE_VERSION), project $COMPOSE_PROJECT_NAME, scope $SCOPE"

require_free_ports 5001 5002 5003 6000 7000 8001 8002 8003 8004 9090

say "base images"
bash scripts/airgap-images.sh

# The dev profile: after `cargo test` (as in CI) these are already built, and
# a release build would add minutes for clients that send a few hundred
# requests.
say "host test clients (cargo build)"
cargo build --locked --bin causal_demo --bin rush_hour
BIN=$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug

say "image build"
# Every service of ours runs the one image (causal-grid:latest, from the x-app
# anchor), so building it for one service builds it for all; Compose 1.29
# would otherwise repeat the (cached) build once per service.
t0=$(date +%s)
if [ "$SCOPE" = smoke ] && docker image inspect causal-grid:latest >/dev/null 2>&1; then
    # Compose v2 builds with BuildKit and 1.29 with the classic builder, which
    # do not share a layer cache: rebuilding would repeat the whole release
    # build for the same image.
    echo "smoke scope: reusing the causal-grid:latest image already built"
else
    dc build node1
    ok "image built from the Dockerfile by ${COMPOSE[*]} $COMPOSE_VERSION build in $(($(date +%s) - t0)) s"
fi

SERVICES=$(dc config --services | grep -vx grafana | tr '\n' ' ')
say "up: $SERVICES"
# shellcheck disable=SC2086
dc up -d --no-build $SERVICES

# ---------------------------------------------------------------------------
cid() { dc ps -q "$1"; }

# wait_healthy SECONDS SERVICE...: every service's health check passes.
wait_healthy() {
    local deadline=$(($(date +%s) + $1)) s state pending
    shift
    while :; do
        pending=()
        for s in "$@"; do
            state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(cid "$s")" 2>/dev/null || echo missing)
            case $state in healthy | running) ;; *) pending+=("$s:$state") ;; esac
        done
        [ ${#pending[@]} -eq 0 ] && return 0
        [ "$(date +%s)" -ge "$deadline" ] && fail "not healthy in time: ${pending[*]}"
        sleep 2
    done
}

# retry SECONDS CMD...: run CMD until it succeeds or the time is up.
retry() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 2
    done
}

# shellcheck disable=SC2086
wait_healthy 180 $SERVICES
retry 60 curl -fsS -o /dev/null "$PROM/-/ready" || fail "Prometheus is not ready"
ok "all $(echo "$SERVICES" | wc -w) services up, every health check passing (KV nodes: --ready-check)"

# ---------------------------------------------------------------------------
if [ "$SCOPE" = full ]; then
    say "causal_demo"
    "$BIN/causal_demo" || fail "causal_demo failed"
    ok "causal_demo passed against the three containers on ports 5001-5003"
fi

# put NODE_URL KEY VALUE: prints the Causal-Context header of the response.
put() {
    local headers
    headers=$(curl -fsS --max-time 10 -D - -o /dev/null -H 'Content-Type: application/json' \
        -d "{\"key\":\"$2\",\"value\":\"$3\"}" "$1/put") || return 1
    printf '%s\n' "$headers" | tr -d '\r' | sed -n 's/^[Cc]ausal-[Cc]ontext: *//p'
}
# get NODE_URL KEY [CONTEXT]: prints the value.
get() {
    local hdr=()
    [ -n "${3:-}" ] && hdr=(-H "Causal-Context: $3")
    curl -fsS --max-time 10 "${hdr[@]}" "$1/get?key=$2" |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["value"])'
}

say "KV writes and reads on every node"
run_id=$$
for i in 0 1 2; do
    ctx=$(put "${NODES[$i]}" "e2e-$run_id-$i" "v$i") || fail "put on ${NODES[$i]}"
    [ -n "$ctx" ] || fail "no Causal-Context header from ${NODES[$i]}/put"
    for j in 0 1 2; do
        v=$(get "${NODES[$j]}" "e2e-$run_id-$i" "$ctx") || fail "get e2e-$run_id-$i on ${NODES[$j]}"
        [ "$v" = "v$i" ] || fail "${NODES[$j]} read $v for a write of v$i on ${NODES[$i]}"
    done
done
ok "a write on each node is read back from every node with its causal context"

# ---------------------------------------------------------------------------
# prom_query EXPR: prints how many series the instant query returns.
prom_query() {
    curl -fsS --data-urlencode "query=$1" "$PROM/api/v1/query" |
        "$PY" -c 'import json,sys; r=json.load(sys.stdin); assert r["status"]=="success", r; print(len(r["data"]["result"]))'
}

say "Prometheus targets"
targets_up() {
    curl -fsS "$PROM/api/v1/targets?state=active" | "$PY" -c '
import json, sys
ts = json.load(sys.stdin)["data"]["activeTargets"]
down = [t["labels"].get("service", t["scrapeUrl"]) + ":" + t["health"] for t in ts if t["health"] != "up"]
services = {t["labels"].get("service") for t in ts}
print(len(ts), "targets;", "down:", down or "none", file=sys.stderr)
sys.exit(1 if down or len(ts) < 10 or None in services else 0)'
}
retry 60 targets_up || fail "some Prometheus targets are not up"
ok "Prometheus: all 10 targets (3 nodes, 4 substations, balancer, entry, itself) up, each labelled by service"

if [ "$SCOPE" = smoke ]; then
    exit 0
fi

say "rush hour"
# shellcheck disable=SC2086
"$BIN/rush_hour" --target "$ENTRY" ${E2E_RUSH_ARGS:---duration 20 --rate 40 --ramp-up 5 --ramp-down 5 --concurrency 32} ||
    fail "rush_hour reported errors"
spread() {
    local n
    n=$(prom_query 'sum by (substation) (substation_sessions_started_total) > 0') || return 1
    [ "$n" -eq 4 ]
}
retry 30 spread || fail "not every substation took sessions: $(curl -fsS "$BALANCER/status")"
ok "rush_hour ran without errors and all 4 substations started sessions"

# ---------------------------------------------------------------------------
say "a grid operator lowers a limit"
code=$(curl -s -o /dev/null -w '%{http_code}' -XPUT "$SUB1/limit" -H 'content-type: application/json' -d '{"capacity_kw": 150}')
[ "$code" = 401 ] || fail "PUT /limit without the token answered $code, not 401"
curl -fsS -XPUT "$SUB1/limit" -H "Authorization: Bearer $GRID_ADMIN_TOKEN" \
    -H 'content-type: application/json' -d '{"capacity_kw": 150}' >/dev/null ||
    fail "PUT /limit with the token failed"
balancer_sees_limit() {
    curl -fsS "$BALANCER/status" | "$PY" -c '
import json, sys
subs = json.load(sys.stdin)["substations"]
sys.exit(0 if any(s["name"] == "substation1" and s["capacity_w"] == 150000 for s in subs) else 1)'
}
retry 20 balancer_sees_limit || fail "the balancer did not see substation1's new limit: $(curl -fsS "$BALANCER/status")"
prometheus_sees_limit() {
    [ "$(prom_query 'substation_capacity_watts{substation="substation1"} == 150000 and on(substation) substation_power_watts <= substation_capacity_watts')" = 1 ]
}
retry 30 prometheus_sees_limit || fail "Prometheus did not see substation1's new limit with its power under it"
curl -fsS -XPUT "$SUB1/limit" -H "Authorization: Bearer $GRID_ADMIN_TOKEN" \
    -H 'content-type: application/json' -d '{"capacity_kw": 300}' >/dev/null ||
    fail "restoring substation1's limit failed"
ok "PUT /limit: 401 without the token; with it, the balancer and Prometheus see 150 kW, power under it; restored"

# ---------------------------------------------------------------------------
say "dashboard expressions"
# Grafana's $__rate_interval is at least four scrape intervals (4 x 5 s).
dashboard_exprs() {
    "$PY" - grafana/dashboards/*.json <<'PY'
import json, sys
for path in sys.argv[1:]:
    def walk(panels):
        for p in panels:
            if p.get("type") == "row":
                yield from walk(p.get("panels", []))
            else:
                yield p
    for p in walk(json.load(open(path))["panels"]):
        for t in p.get("targets", []):
            if t.get("expr"):
                print(json.dumps([path.split("/")[-1], p["title"], t["expr"].replace("$__rate_interval", "1m")]))
PY
}
empty_exprs() {
    local line file title expr n missing=0 total=0
    while IFS= read -r line; do
        file=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[0])' "$line")
        title=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[1])' "$line")
        expr=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[2])' "$line")
        total=$((total + 1))
        n=$(prom_query "$expr") || n=error
        if [ "$n" = error ] || [ "$n" -eq 0 ]; then
            missing=$((missing + 1))
            echo "  no series ($n): $file / $title: $expr" >&2
        fi
    done < <(dashboard_exprs)
    echo "  $((total - missing))/$total expressions return series" >&2
    EXPR_TOTAL=$total
    [ "$missing" -eq 0 ]
}
retry 45 empty_exprs || fail "some dashboard expressions return no series"
ok "every one of the $EXPR_TOTAL dashboard expressions returns at least one series"

# ---------------------------------------------------------------------------
# status NODE_URL: the node's delivered clock and store, as canonical JSON.
status() {
    curl -fsS --max-time 5 "$1/status" |
        "$PY" -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({"vc": s["vc"], "store": s["store"]}, sort_keys=True))'
}
# brief NODE_URL: delivered clock and key count, for messages.
brief() {
    curl -fsS --max-time 5 "$1/status" |
        "$PY" -c 'import json,sys; s=json.load(sys.stdin); print("vc %s, %d keys, %s buffered" % (s["vc"], len(s["store"]), s.get("buffered_msgs")))' ||
        echo unreachable
}
all_brief() {
    local i
    for i in 0 1 2; do printf 'node%d: %s; ' $((i + 1)) "$(brief "${NODES[$i]}")"; done
}
converged() {
    local a b c
    a=$(status "${NODES[0]}") && b=$(status "${NODES[1]}") && c=$(status "${NODES[2]}") || return 1
    [ "$a" = "$b" ] && [ "$b" = "$c" ]
}
# write_burst LABEL NODE_URL...: 10 writes spread over the given nodes.
write_burst() {
    local label=$1 k
    shift
    local urls=("$@")
    for k in $(seq 0 9); do
        put "${urls[$((k % ${#urls[@]}))]}" "$label-$k" "$label-$k" >/dev/null ||
            fail "write $label-$k failed"
    done
}

# The fault checks below report and carry on, so one run shows them all.
fault_failed() {
    FAULTS+=("$*")
    printf 'FAILED: %s\n' "$*" >&2
}

say "disconnect a KV node from the network and reconnect it"
node2=$(cid node2)
net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$node2" | awk '{print $1}')
docker network disconnect "$net" "$node2"
write_burst "while-node2-cut-off" "${NODES[0]}" "${NODES[2]}"
# The compose alias is lost with the endpoint; peers address node2 by it.
docker network connect --alias node2 "$net" "$node2"
if retry 60 converged; then
    ok "node2 cut off from the network while 10 writes landed on node1/node3, reconnected, all three nodes converged (vc and store)"
else
    fault_failed "nodes did not converge after node2 was reconnected: $(all_brief)"
fi

say "stop and start a KV node"
node3=$(cid node3)
docker stop -t 10 "$node3" >/dev/null
write_burst "while-node3-stopped" "${NODES[0]}" "${NODES[1]}"
docker start "$node3" >/dev/null
wait_healthy 60 node3
if retry 60 converged; then
    ok "node3 stopped while 10 writes landed on node1/node2, started again, all three nodes converged (vc and store)"
else
    fault_failed "nodes did not converge after node3 restarted: $(all_brief)"
fi

say "kill -9 a KV node under write load, restart it on its volume"
# A writer puts to node1 and node2 in turn and records every acknowledged
# write; node1 is killed (SIGKILL) in the middle and started again.
acked=$(mktemp)
(
    for k in $(seq 0 79); do
        url=${NODES[$((k % 2))]}
        if put "$url" "kill9-$run_id-$k" "v$k" >/dev/null 2>&1; then
            echo "kill9-$run_id-$k v$k" >>"$acked"
        fi
        sleep 0.05
    done
) &
writer=$!
sleep 1.5
node1=$(cid node1)
docker kill -s KILL "$node1" >/dev/null
sleep 1
docker start "$node1" >/dev/null
wait "$writer" || true
wait_healthy 60 node1
# all_have FILE: every "key value" line of FILE is in every node's store.
all_have() {
    local i
    for i in 0 1 2; do
        curl -fsS --max-time 5 "${NODES[$i]}/status" | "$PY" -c '
import json, sys
store = json.load(sys.stdin)["store"]
missing = [l.split()[0] for l in open(sys.argv[1]) if l.strip() and
           store.get(l.split()[0], {}).get("value") != l.split()[1]]
if missing:
    print("missing on this node:", missing[:5], file=sys.stderr)
    sys.exit(1)' "$acked" || return 1
    done
}
n_acked=$(wc -l <"$acked")
if retry 60 converged && all_have; then
    ok "node1 killed with SIGKILL while 80 writes were sent to node1/node2 ($n_acked acknowledged), restarted on its volume: every acknowledged write is on all three nodes, which converged"
else
    fault_failed "after the kill -9 of node1 the acknowledged writes are not all on every node: $(all_brief)"
fi

say "wipe a KV node's volume and let it rejoin"
dc rm -s -f node3 >/dev/null 2>&1
docker volume rm "${COMPOSE_PROJECT_NAME}_node3-data" >/dev/null
write_burst "while-node3-wiped" "${NODES[0]}" "${NODES[1]}"
dc up -d --no-build node3 >/dev/null 2>&1
wait_healthy 90 node3
if retry 90 converged && all_have; then
    ok "node3's container and volume removed while 10 writes landed, recreated empty: it rebuilt from its peers and converged (vc and store)"
else
    fault_failed "the wiped node3 did not converge: $(all_brief)"
fi
rm -f "$acked"

say "stop and start every KV node"
before=$(status "${NODES[0]}")
dc stop -t 10 node1 node2 node3 >/dev/null 2>&1
dc start node1 node2 node3 >/dev/null 2>&1
wait_healthy 90 node1 node2 node3
same_as_before() { converged && [ "$(status "${NODES[0]}")" = "$before" ]; }
if retry 60 same_as_before; then
    ok "all three KV nodes stopped and started again: every node holds exactly the clock and store it had before"
else
    fault_failed "after a restart of the whole cluster the data changed: $(all_brief)"
fi

say "kill a substation during a rush hour"
# grid_load: the balancer's sampled power over capacity, all substations.
grid_load() {
    curl -fsS --max-time 5 "$BALANCER/status" | "$PY" -c '
import json, sys
def views(x):
    if isinstance(x, dict):
        if "capacity_w" in x:
            yield x
        for v in x.values():
            yield from views(v)
    elif isinstance(x, list):
        for v in x:
            yield from views(v)
vs = [v for v in views(json.load(sys.stdin)) if v.get("capacity_w")]
print("%.3f" % (sum(v.get("sampled_power_w") or 0 for v in vs) / sum(v["capacity_w"] for v in vs)))'
}
# Sessions of the first rush hour must have ended, so that this one, sized
# to fit in the capacity left without substation2, never finds the grid full:
# then every request must be granted, and any 503 is a request lost to the
# kill.
drained() { "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 0.3 else 1)' "$(grid_load)"; }
retry 180 drained || fault_failed "the grid did not drain below 30% load (at $(grid_load))"
rush_json=$(mktemp)
"$BIN/rush_hour" --target "$ENTRY" --duration 16 --rate 6 --ramp-up 2 --ramp-down 2 \
    --power-min 11 --power-max 11 --energy-min 5 --energy-max 10 \
    --concurrency 16 --json "$rush_json" >/dev/null 2>&1 &
rush=$!
sleep 6
sub2=$(cid substation2)
docker kill -s KILL "$sub2" >/dev/null
rush_ok=yes
wait "$rush" || rush_ok=""
counts=$("$PY" -c '
import collections, json, sys
r = json.load(open(sys.argv[1]))["requests"]
c = collections.Counter(o["status"] for o in r)
print(" ".join("%s:%d" % kv for kv in sorted(c.items())))' "$rush_json" 2>/dev/null || echo none)
if [ -n "$rush_ok" ] && [[ $counts =~ ^200:[0-9]+$ ]]; then
    ok "substation2 killed (SIGKILL) 6 s into a 16 s rush hour sized to fit the remaining capacity: every request was granted ($counts)"
else
    fault_failed "requests were lost while substation2 was killed during a rush hour (statuses $counts)"
fi
rm -f "$rush_json"
docker start "$sub2" >/dev/null
wait_healthy 60 substation2

say "stop the balancer, then start it again"
charge() {
    curl -sS -o /dev/null -D - --max-time 10 -H 'Content-Type: application/json' \
        -d '{"power_kw": 11, "energy_kwh": 5}' "$ENTRY/request_charge" | tr -d '\r'
}
# `compose ps` lists running containers only: take the id while it runs.
balancer=$(cid load_balancer)
docker stop -t 5 "$balancer" >/dev/null
headers=$(charge || true)
if printf '%s\n' "$headers" | head -n 1 | grep -q ' 503' &&
    printf '%s\n' "$headers" | grep -qi '^retry-after:'; then
    ok "with the balancer stopped the entry service answers 503 with Retry-After"
else
    fault_failed "with the balancer stopped the entry service answered: $(printf '%s' "$headers" | head -n 1)"
fi
docker start "$balancer" >/dev/null
wait_healthy 60 load_balancer
charged() { charge | head -n 1 | grep -q ' 200'; }
if retry 30 charged; then
    ok "the balancer started again: requests through the entry service succeed again"
else
    fault_failed "requests did not succeed after the balancer came back"
fi

if retry 60 targets_up; then
    ok "Prometheus sees every target up again after the faults"
else
    fault_failed "Prometheus targets did not all come back up"
fi

[ ${#FAULTS[@]} -eq 0 ] || fail "${#FAULTS[@]} fault check(s) failed"
