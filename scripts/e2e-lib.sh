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

# require_free_ports PORT...: fails if anything listens on one of them.
require_free_ports() {
    local port
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            fail "port $port is already in use on this machine; stop whatever listens there"
        fi
    done
}
