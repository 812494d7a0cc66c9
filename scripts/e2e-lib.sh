# Shared by the end-to-end scripts (sourced, not run): progress lines, the
# list of checks passed, failing, and the checks every run starts with.
# The sourcing script sets E2E_NAME first.

START=$(date +%s)
CHECKED=()
say() { printf '\n== %s\n' "$*"; }
ok() {
    CHECKED+=("$*")
    printf 'ok: %s\n' "$*"
}
fail() {
    printf 'FAILED: %s\n' "$*" >&2
    exit 1
}

# Exits 0 with a message when no Docker engine is reachable.
require_docker() {
    if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
        echo "$E2E_NAME: skipped: no Docker engine is reachable"
        exit 0
    fi
}

# require_free_ports PORT...: waits up to E2E_PORT_WAIT seconds (default
# 900) for every port to be free, then fails if one is still taken. Another
# run of the stack on this machine (a second checkout, an earlier CI try
# still tearing down) holds the same published ports; waiting serialises the
# two runs instead of failing the second one at once.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
require_free_ports() {
    local port deadline=$(($(date +%s) + ${E2E_PORT_WAIT:-900})) said=""
    for port in "$@"; do
        while port_taken "$port"; do
            if [ "$(date +%s)" -ge "$deadline" ]; then
                docker ps --filter "publish=$port" --format '{{.Names}} ({{.Status}})' 2>/dev/null || true
                fail "port $port is already in use on this machine; stop whatever listens there"
            fi
            if [ -z "$said" ]; then
                echo "port $port is in use; waiting up to ${E2E_PORT_WAIT:-900} s for it to be freed"
                docker ps --filter "publish=$port" --format '  held by container {{.Names}} ({{.Status}})' 2>/dev/null || true
                said=yes
            fi
            sleep 2
        done
    done
}
