#!/usr/bin/env bash
# Builds local stand-ins for the base images that the Dockerfile and
# docker-compose.yml name, on a machine whose Docker engine cannot pull from
# any container registry but whose apt mirror works.
#
# For every image named by an `ARG *_IMAGE=` default in the Dockerfile or an
# `image:` line in docker-compose.yml that is not present locally:
#
#   debian:<suite>[-slim]   a minimal Debian root file system made with
#                           debootstrap from the mirror apt already uses here;
#   rust:<version>-...      that root file system plus gcc and libc6-dev, and
#                           the Rust toolchain installed on this machine, laid
#                           out like the official image (CARGO_HOME, PATH);
#   prom/prometheus:<tag>   that root file system plus Debian's `prometheus`
#                           package, with the official image's entrypoint,
#                           config path, flags, user, workdir and volume;
#   grafana/*               cannot be built (Debian has no package): reported,
#                           and the end-to-end run does without it.
#
# Images that already exist are left alone, so on a machine with registry
# access (or after one run) the script does nothing. The stand-ins carry the
# label causal-grid.stand-in=true.
#
# Needs root, debootstrap and a Docker engine. Environment:
#   AIRGAP_MIRROR   Debian mirror URL (default: read from /etc/apt/sources*)
#   AIRGAP_CACHE    where downloaded .deb files are kept between runs
#                   (default: ~/.cache/causal-grid-airgap)
#   AIRGAP_FORCE=1  rebuild stand-ins even if an image of that name exists
#
# Builds inside the stand-in rust image fetch crates from crates.io over the
# default bridge network. The stand-in trusts the same certificate
# authorities as this machine (/usr/local/share/ca-certificates), so a
# TLS-inspecting egress proxy that the host trusts works inside the build
# too. Where the bridge network has no route out, build with the host's
# network instead: `docker build --network host .`.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf 'airgap: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot)"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine is reachable"

CACHE=${AIRGAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/causal-grid-airgap}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/airgap.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------
# Which images the repository names.

images_named() {
    sed -n 's/^ARG [A-Z_]*IMAGE=\(.*\)$/\1/p' Dockerfile
    # `image:` lines, minus the project's own image (built from the Dockerfile).
    sed -n 's/^[[:space:]]*image:[[:space:]]*["'\'']\{0,1\}\([^"'\'' ]*\).*$/\1/p' docker-compose.yml |
        grep -v '^causal-grid' || true
}

# ---------------------------------------------------------------------------
# The apt mirror already configured on this machine.

apt_mirror() {
    if [ -n "${AIRGAP_MIRROR:-}" ]; then
        echo "$AIRGAP_MIRROR"
        return
    fi
    scripts/apt-mirror.sh
}

# ---------------------------------------------------------------------------
# Root file systems.

# make_rootfs DIR SUITE [PACKAGES]: a minbase Debian in DIR.
# Stand-ins are built in parallel, so each has its own package cache and log.
make_rootfs() {
    local dir=$1 suite=$2 include=${3:-}
    local cache
    cache=$CACHE/debs-$(basename "$dir")
    mkdir -p "$cache"
    log "debootstrap $suite${include:+ (+$include)}"
    debootstrap --variant=minbase --cache-dir="$cache" \
        ${include:+--include="$include"} \
        "$suite" "$dir" "$MIRROR" >"$dir.log" 2>&1 ||
        {
            tail -20 "$dir.log" >&2
            die "debootstrap of $(basename "$dir") failed"
        }
    # Like the official images: no package lists or downloaded archives.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb \
        "$dir"/var/log/*.log "$dir"/tmp/*
}

# import_rootfs DIR NAME [--change ...]: the directory as image NAME.
import_rootfs() {
    local dir=$1 name=$2
    shift 2
    tar --numeric-owner -C "$dir" -c . |
        docker import --change 'LABEL causal-grid.stand-in=true' "$@" - "$name" >/dev/null
    log "built $name"
}

# The Debian release an image tag refers to (bookworm for debian:bookworm-slim
# or rust:1.95.0-slim-bookworm); the host's release when the tag names none.
suite_of() {
    local tag=${1#*:} s
    for s in trixie bookworm bullseye buster; do
        case $tag in *"$s"*)
            echo "$s"
            return
            ;;
        esac
    done
    # shellcheck disable=SC1091
    (. /etc/os-release && echo "$VERSION_CODENAME")
}

# ---------------------------------------------------------------------------
# Stand-ins.

build_debian() {
    local name=$1 root=$WORK/debian
    make_rootfs "$root" "$(suite_of "$name")"
    import_rootfs "$root" "$name" --change 'CMD ["bash"]'
}

build_rust() {
    local name=$1 root=$WORK/rust sysroot version wanted triple
    sysroot=$(rustc --print sysroot) || die "no Rust toolchain on this machine"
    version=$(rustc --version | awk '{print $2}')
    triple=$(rustc -vV | sed -n 's/^host: //p')
    wanted=${name#*:}
    wanted=${wanted%%-*}
    case $version in "$wanted"*) ;; *)
        log "warning: $name asks for Rust $wanted; using this machine's $version"
        ;;
    esac

    make_rootfs "$root" "$(suite_of "$name")" ca-certificates,gcc,libc6-dev,libc-dev-bin,binutils,wget

    # The official image keeps toolchains under RUSTUP_HOME and puts cargo and
    # rustc on PATH through CARGO_HOME/bin; documentation is left out.
    local tc=/usr/local/rustup/toolchains/$version-$triple
    mkdir -p "$root$tc" "$root/usr/local/cargo/bin"
    tar -C "$sysroot" --exclude=./share/doc -c . | tar -C "$root$tc" -x
    local bin
    for bin in "$root$tc"/bin/*; do
        ln -s "$tc/bin/$(basename "$bin")" "$root/usr/local/cargo/bin/$(basename "$bin")"
    done
    chmod -R a+rwX "$root/usr/local/cargo"

    # Trust what this machine trusts (see the header).
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null 2>&1
    fi

    import_rootfs "$root" "$name" \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change "ENV RUST_VERSION=$version" \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]'
}

build_prometheus() {
    local name=$1 root=$WORK/prometheus
    make_rootfs "$root" "$(suite_of "$name")" prometheus
    # Debian keeps the console files under /etc; the official flags point to
    # /usr/share/prometheus.
    mkdir -p "$root/usr/share/prometheus" "$root/prometheus"
    ln -sfn /etc/prometheus/consoles "$root/usr/share/prometheus/consoles"
    ln -sfn /etc/prometheus/console_libraries "$root/usr/share/prometheus/console_libraries"
    chown 65534:65534 "$root/prometheus"
    chmod a+r "$root/etc/prometheus/prometheus.yml"
    import_rootfs "$root" "$name" \
        --change 'ENTRYPOINT ["/bin/prometheus"]' \
        --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.console.libraries=/usr/share/prometheus/console_libraries", "--web.console.templates=/usr/share/prometheus/consoles"]' \
        --change 'USER nobody' \
        --change 'WORKDIR /prometheus' \
        --change 'EXPOSE 9090' \
        --change 'VOLUME ["/prometheus"]'
}

# ---------------------------------------------------------------------------

MIRROR=""
status=0
pids=()
for image in $(images_named | sort -u); do
    if [ "${AIRGAP_FORCE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
        log "$image is present"
        continue
    fi
    case $image in
        debian:* | rust:* | prom/prometheus:*)
            command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
            [ -n "$MIRROR" ] || MIRROR=$(apt_mirror)
            ;;
    esac
    # Each build runs in its own subshell, in parallel with the others.
    case $image in
        debian:*) build_debian "$image" & pids+=($!) ;;
        rust:*) build_rust "$image" & pids+=($!) ;;
        prom/prometheus:*) build_prometheus "$image" & pids+=($!) ;;
        grafana/*)
            log "$image is missing and cannot be built here (no Debian package); run without the grafana service"
            ;;
        *)
            log "$image is missing and no stand-in recipe exists for it"
            status=1
            ;;
    esac
done
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
exit "$status"
