#!/usr/bin/env bash
# Makes `docker compose` (Compose v2, the CLI plugin) available when only the
# older standalone `docker-compose` 1.29 is installed, as on Debian 12 where
# the archive's `docker-compose` package is still 1.29.
#
#   scripts/compose-v2.sh          install if missing, then print the version
#
# Debian 13 (trixie) packages Compose v2 as `docker-compose`: a static Go
# program that needs nothing beyond libc. This script downloads that package
# with apt itself, from the mirror apt already uses on this machine, through
# a private source list and package index (so the machine's own apt
# configuration and its installed `docker-compose` 1.29 are left alone);
# apt checks the release signature against Debian's archive keyring and the
# package's checksum. The plugin binary is then copied to
# /usr/local/lib/docker/cli-plugins, where the docker CLI looks for plugins.
#
# Needs root, apt and the debian-archive-keyring. Environment:
#   COMPOSE_V2_SUITE   Debian suite to take the package from (default trixie)
#   COMPOSE_V2_DIR     plugin directory (default /usr/local/lib/docker/cli-plugins)
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf 'compose-v2: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if docker compose version >/dev/null 2>&1; then
    docker compose version
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root to install the plugin"
command -v apt-get >/dev/null || die "apt-get is not available"

SUITE=${COMPOSE_V2_SUITE:-trixie}
DEST=${COMPOSE_V2_DIR:-/usr/local/lib/docker/cli-plugins}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$KEYRING" ] || die "$KEYRING is missing (apt-get install debian-archive-keyring)"

MIRROR=${COMPOSE_V2_MIRROR:-$(scripts/apt-mirror.sh)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/compose-v2.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/archives/partial" "$WORK/parts"
echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" >"$WORK/sources.list"

# A private apt: its own source list, index and cache; nothing installed.
# apt_private TOOL ARGS...
apt_private() {
    local tool=$1
    shift
    "$tool" -q \
        -o Dir::Etc::SourceList="$WORK/sources.list" \
        -o Dir::Etc::SourceParts="$WORK/parts" \
        -o Dir::State::Lists="$WORK/lists" \
        -o Dir::Cache::Archives="$WORK/archives" \
        -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" \
        -o APT::Sandbox::User=root \
        "$@"
}

log "fetching the $SUITE package index (signature checked by apt)"
apt_private apt-get update >"$WORK/update.log" 2>&1 || {
    cat "$WORK/update.log" >&2
    die "apt-get update of $SUITE failed"
}
version=$(apt_private apt-cache policy docker-compose 2>/dev/null | sed -n 's/^ *Candidate: *//p')
case $version in
2.*) ;;
*) die "$SUITE has docker-compose ${version:-none}, not a Compose v2" ;;
esac
log "downloading docker-compose $version"
(cd "$WORK" && apt_private apt-get download "docker-compose=$version" >"$WORK/download.log" 2>&1) || {
    cat "$WORK/download.log" >&2
    die "download of docker-compose $version failed"
}
deb=$(find "$WORK" -maxdepth 1 -name 'docker-compose_*.deb' | head -n 1)
[ -n "$deb" ] || die "apt reported success but no package file is there"
dpkg-deb -x "$deb" "$WORK/root"
plugin=$WORK/root/usr/libexec/docker/cli-plugins/docker-compose
[ -x "$plugin" ] || die "the package has no usr/libexec/docker/cli-plugins/docker-compose"
install -D -m 0755 "$plugin" "$DEST/docker-compose"
log "installed $DEST/docker-compose"
docker compose version
