#!/usr/bin/env bash
# End-to-end run of deploy/swarm/stack.yml on this machine's Docker engine,
# as a one-node swarm:
#
# 1. `docker swarm init` if the engine is not in a swarm (and `swarm leave
#    --force` at the end only if this script initialised it);
# 2. creates the cluster secret as a Docker secret and deploys the stack
#    from the image causal-grid:latest (built by the compose run before it,
#    or here if it is missing), without Grafana when its image is absent;
# 3. waits for every service, then runs causal_demo and a short rush_hour
#    through the published ports;
# 4. scales the substations from 4 to 6: within two poll intervals each of
#    the two balancers lists every substation, and all of them take
#    sessions (per Prometheus, which finds them by DNS too);
# 5. kills one KV node's container: Swarm restarts it and the three nodes
#    converge;
# 6. removes the stack, its volumes and the secret, also on failure.
#
# Skips (exit 0) when no Docker engine is reachable. Environment:
#   E2E_STACK   stack name (default: causalgridswarm)
#   E2E_KEEP=1  leave the stack running afterwards
set -euo pipefail

cd "$(dirname "$0")/.."
E2E_NAME=e2e-swarm
# shellcheck source=scripts/e2e-lib.sh
. scripts/e2e-lib.sh
require_docker

STACK=${E2E_STACK:-causalgridswarm}
NODES=(http://localhost:5001 http://localhost:5002 http://localhost:5003)
ENTRY=http://localhost:6000
PROM=http://localhost:9090
PY=python3
SECRET_VALUE=swarm-e2e-secret-$$
SECRET_NAME=${STACK}_cluster_secret
WORK=$(mktemp -d)
INITIALISED=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ]; then
        echo
        echo "== failure diagnostics"
        docker stack ps --no-trunc "$STACK" 2>/dev/null | head -40 || true
        for s in $(docker stack services --format '{{.Name}}' "$STACK" 2>/dev/null); do
            echo "-- $s"
            docker service logs --no-task-ids --tail 15 "$s" 2>&1 | tail -15 || true
        done
    fi
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        echo "E2E_KEEP=1: leaving the stack up (docker stack rm $STACK)"
    else
        echo
        echo "== removing the stack, its volumes and its secret"
        docker stack rm "$STACK" >/dev/null 2>&1 || true
        # Volumes can go once the stack's containers are gone.
        local deadline=$(($(date +%s) + 60))
        while [ -n "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] &&
            [ "$(date +%s)" -lt "$deadline" ]; do
            sleep 1
        done
        docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK" |
            xargs -r docker volume rm >/dev/null 2>&1 || true
        docker secret rm "$SECRET_NAME" >/dev/null 2>&1 || true
        # The overlay network is removed with the stack, asynchronously.
        deadline=$(($(date +%s) + 30))
        while docker network inspect "${STACK}_grid" >/dev/null 2>&1 && [ "$(date +%s)" -lt "$deadline" ]; do
            sleep 1
        done
        if [ -n "$INITIALISED" ]; then
            docker swarm leave --force >/dev/null 2>&1 || true
        fi
    fi
    rm -rf "$WORK"
    echo
    echo "== summary ($(($(date +%s) - START)) s)"
    local c
    for c in "${CHECKED[@]}"; do echo "  checked: $c"; done
    if [ "$rc" -eq 0 ]; then echo "e2e-swarm: passed"; else echo "e2e-swarm: FAILED (exit $rc)"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

require_free_ports 5001 5002 5003 6000 9090

# ---------------------------------------------------------------------------
say "swarm"
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    INITIALISED=yes
    ok "initialised a one-node swarm (it is left again at the end)"
else
    echo "the engine is already in a swarm: using it"
fi

say "image and clients"
if ! docker image inspect causal-grid:latest >/dev/null 2>&1; then
    bash scripts/airgap-images.sh
    docker build -t causal-grid:latest .
fi
cargo build --locked --bin causal_demo --bin rush_hour
BIN=${CARGO_TARGET_DIR:-target}/debug

say "deploy"
printf '%s' "$SECRET_VALUE" | docker secret create "$SECRET_NAME" - >/dev/null
# The stack as written, with the secret of this run, and without Grafana
# when its image cannot be had here (no registry).
"$PY" - deploy/swarm/stack.yml "$WORK/stack.yml" "$SECRET_NAME" "$(docker image inspect grafana/grafana:11.3.0 >/dev/null 2>&1 && echo keep || echo drop)" <<'PY'
import os, re, sys
src, dst, secret, grafana = sys.argv[1:]
text = open(src).read()
text = text.replace("name: causal-grid_cluster_secret", "name: " + secret)
base = os.path.dirname(os.path.abspath(src))
text = re.sub(r"file: (\.\./\.\./\S+)", lambda m: "file: " + os.path.normpath(os.path.join(base, m.group(1))), text)
if grafana == "drop":
    text = re.sub(r"\n  grafana:\n(?:    .*\n|\s*\n)*?(?=\nnetworks:)", "\n", text)
    for name in ("grafana_datasource", "grafana_dashboards", "dashboard_smart_grid", "dashboard_causal_kv"):
        text = re.sub(r"\n  " + name + r":\n    file: \S+", "", text)
    text = text.replace("  grafana-data:\n", "")
open(dst, "w").write(text)
PY
grep -q "grafana:" "$WORK/stack.yml" || echo "grafana/grafana image not present: deploying without Grafana"
docker stack deploy --resolve-image never -c "$WORK/stack.yml" "$STACK" >/dev/null
ok "stack deployed from causal-grid:latest with the cluster secret as a Docker secret"

# wait_replicas SECONDS: every service runs all its replicas.
wait_replicas() {
    local deadline=$(($(date +%s) + $1)) pending
    while :; do
        pending=$(docker stack services --format '{{.Name}} {{.Replicas}}' "$STACK" |
            awk '{split($2, r, "/"); if (r[1] != r[2]) print $0}')
        [ -z "$pending" ] && return 0
        [ "$(date +%s)" -ge "$deadline" ] && fail "services not running in time: $pending"
        sleep 2
    done
}

# get URL: the body, or nothing.
get() { curl -fsS --max-time 3 "$1" 2>/dev/null || true; }

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds.
wait_for() {
    local deadline=$(($(date +%s) + $1)) what=$2
    shift 2
    until "$@"; do
        [ "$(date +%s)" -ge "$deadline" ] && fail "$what: not within the deadline"
        sleep 1
    done
}

wait_replicas 180
kv_ready() { for n in "${NODES[@]}"; do curl -fsS --max-time 3 "$n/ready" >/dev/null 2>&1 || return 1; done; }
wait_for 120 "KV nodes ready" kv_ready
entry_up() { curl -fsS --max-time 3 "$ENTRY/health" >/dev/null 2>&1; }
wait_for 60 "entry service up" entry_up
ok "every service runs its replicas; the three KV nodes are ready"

# prom_values QUERY LABEL: one "label value" line per series of an instant
# query to Prometheus (nothing while it cannot answer).
prom_values() {
    local body
    body=$(get "$PROM/api/v1/query?query=$1")
    [ -n "$body" ] || return 0
    "$PY" -c '
import json, sys
for x in json.loads(sys.argv[1])["data"]["result"]:
    print(x["metric"].get(sys.argv[2], "?"), x["value"][1])
' "$body" "$2"
}

# balancers_list N: each of the two balancers (Prometheus scrapes both, found
# by DNS) sees exactly N healthy substations: its `lb_substation_healthy`
# gauges are its /status view (departed substations' series are removed).
balancers_list() {
    local v
    v=$(prom_values "sum%20by%20(instance)%20(lb_substation_healthy)" instance)
    echo "$v"
    [ "$(awk 'NF' <<<"$v" | wc -l)" -eq 2 ] && [ "$(awk -v n="$1" 'NF && $2 == n' <<<"$v" | wc -l)" -eq 2 ]
}
wait_for 60 "both balancers list 5 substations" balancers_list 5
ok "two balancers, each listing the 5 substations it found by DNS (4 + 1 large)"

say "causal_demo"
"$BIN/causal_demo" --secret "$SECRET_VALUE" >"$WORK/demo.log" 2>&1 || { cat "$WORK/demo.log"; fail "causal_demo failed"; }
tail -3 "$WORK/demo.log"
ok "causal_demo passed against the Swarm KV nodes (cluster secret read from CLUSTER_SECRET_FILE)"

say "rush hour"
"$BIN/rush_hour" --target "$ENTRY" --duration 8 --rate 15 --concurrency 16 >"$WORK/rush.log" 2>&1 ||
    { cat "$WORK/rush.log"; fail "rush_hour failed"; }
grep -E "granted|refused|errors" "$WORK/rush.log" | head -5 || true
ok "rush_hour ran through the entry service and both balancers"

say "scale substations 4 -> 6"
docker service scale --detach "${STACK}_substation=6" >/dev/null
wait_replicas 90
wait_for 30 "both balancers list 7 substations" balancers_list 7
ok "scaled to 6 (+1 large) with no other edit: both balancers list all 7 within seconds"
# Enough sessions that every substation gets some: 70 of 20 kW.
"$BIN/rush_hour" --target "$ENTRY" --requests 70 --concurrency 8 --power-min 20 --power-max 20 >"$WORK/rush2.log" 2>&1 ||
    { cat "$WORK/rush2.log"; fail "rush_hour after scaling failed"; }
all_take_sessions() {
    local v
    v=$(prom_values substation_sessions_started_total substation)
    echo "$v"
    [ "$(awk 'NF' <<<"$v" | wc -l)" -eq 7 ] && [ "$(awk 'NF && $2 > 0' <<<"$v" | wc -l)" -eq 7 ]
}
wait_for 60 "every substation has taken sessions (per Prometheus)" all_take_sessions
ok "requests reached all 7 substations (Prometheus finds them by DNS)"

say "kill a KV node's container"
victim=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_node2" | head -1)
[ -n "$victim" ] || fail "no container of ${STACK}_node2"
for i in $(seq 1 10); do
    curl -fsS --max-time 3 -X POST -H 'content-type: application/json' \
        -d "{\"key\":\"swarm$i\",\"value\":\"$i\"}" "${NODES[$((i % 3))]}/put" >/dev/null 2>&1 || true
done
docker kill "$victim" >/dev/null
for i in $(seq 11 20); do
    curl -fsS --max-time 3 -X POST -H 'content-type: application/json' \
        -d "{\"key\":\"swarm$i\",\"value\":\"$i\"}" "${NODES[0]}/put" >/dev/null 2>&1 || true
done
converged() {
    local a b c
    a=$(get "${NODES[0]}/status") && b=$(get "${NODES[1]}/status") && c=$(get "${NODES[2]}/status")
    [ -n "$a" ] && [ -n "$b" ] && [ -n "$c" ] && "$PY" -c '
import json, sys
s = [json.loads(x) for x in sys.argv[1:]]
same = all(x["vc"] == s[0]["vc"] and x["store"] == s[0]["store"] and x["buffered_msgs"] == 0 for x in s)
sys.exit(0 if same and "swarm20" in s[0]["store"] else 1)
' "$a" "$b" "$c"
}
wait_for 120 "the KV nodes converge after node2's container was killed" converged
ok "node2's container killed (kill -9): Swarm restarted it and the three nodes converged"
