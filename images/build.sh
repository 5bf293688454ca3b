#!/usr/bin/env bash
# Builds every image ccpool needs without pulling from a container registry:
#   1. ccpool-base:bookworm    Debian bookworm made with debootstrap --variant=minbase, docker import
#   2. ccpool-worker:latest    images/worker/Dockerfile on that base, with the Claude CLI taken
#                              from the PyPI wheel claude-agent-sdk (pinned version and hash)
# A second run with nothing changed takes seconds: the base is skipped when the image exists,
# the wheel is cached by hash, and the worker is rebuilt only when its inputs' hash changed.
#
# Environment (all optional):
#   CCPOOL_BASE_IMAGE     tag of the base image          (default ccpool-base:bookworm)
#   CCPOOL_WORKER_IMAGE   tag of the worker image        (default ccpool-worker:latest)
#   CCPOOL_BUILD_CACHE    where the wheel is cached      (default ~/.cache/ccpool-build)
#   DEBIAN_MIRROR         mirror for debootstrap         (default http://deb.debian.org/debian)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
base_image=${CCPOOL_BASE_IMAGE:-ccpool-base:bookworm}
worker_image=${CCPOOL_WORKER_IMAGE:-ccpool-worker:latest}
cache=${CCPOOL_BUILD_CACHE:-${HOME}/.cache/ccpool-build}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

wheel_version=0.2.184
wheel_name=claude_agent_sdk-${wheel_version}-py3-none-manylinux_2_17_x86_64.whl
wheel_sha256=40509cadce72d62ded6c3ed831bbcffbff1a7fed8a19cfe1670b3a55418ed089
cli_sha256=343c744baa14bfd38286a7cb90871051f04379956da6c5b803a9e66019a76ac9

log() { printf 'images/build.sh: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

build_base() {
    if docker image inspect "$base_image" >/dev/null 2>&1; then
        log "base $base_image exists, skipped"
        return
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        as_root apt-get update -qq
        as_root apt-get install -y -qq debootstrap >/dev/null
    fi
    local rootfs
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/ccpool-rootfs.XXXXXX")
    trap 'as_root rm -rf "$rootfs"' RETURN
    log "debootstrap bookworm (minbase) from $mirror"
    as_root debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
    as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    log "importing $base_image"
    as_root tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$base_image" >/dev/null
}

fetch_cli() {
    local wheel=$cache/$wheel_name
    mkdir -p "$cache"
    if ! echo "$wheel_sha256  $wheel" | sha256sum --check --status 2>/dev/null; then
        log "downloading $wheel_name"
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            "claude-agent-sdk==$wheel_version" --platform manylinux_2_17_x86_64 -d "$cache"
        echo "$wheel_sha256  $wheel" | sha256sum --check --status \
            || { log "wheel hash mismatch: $wheel"; exit 1; }
    fi
    local cli=$here/worker/claude
    if ! echo "$cli_sha256  $cli" | sha256sum --check --status 2>/dev/null; then
        log "extracting the CLI from the wheel"
        python3 - "$wheel" "$cli" <<'PY'
import shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("claude_agent_sdk/_bundled/claude") as src, open(dest + ".tmp", "wb") as out:
    shutil.copyfileobj(src, out)
PY
        chmod 0755 "$cli.tmp"
        mv "$cli.tmp" "$cli"
        echo "$cli_sha256  $cli" | sha256sum --check --status \
            || { log "CLI hash mismatch: $cli"; exit 1; }
    fi
}

build_worker() {
    local base_id inputs_hash current
    base_id=$(docker image inspect --format '{{.Id}}' "$base_image")
    inputs_hash=$( { cat "$here/worker/Dockerfile" "$here/worker/.dockerignore"; echo "$cli_sha256 $base_id"; } | sha256sum | cut -d' ' -f1)
    current=$(docker image inspect --format '{{ index .Config.Labels "ccpool.build-hash" }}' "$worker_image" 2>/dev/null || true)
    if [ "$current" = "$inputs_hash" ]; then
        log "worker $worker_image is up to date, skipped"
        return
    fi
    log "building $worker_image"
    docker build --quiet \
        --build-arg "BASE_IMAGE=$base_image" \
        --label "ccpool.build-hash=$inputs_hash" \
        -t "$worker_image" "$here/worker" >/dev/null
}

build_base
fetch_cli
build_worker
log "ready: $worker_image"
