#!/usr/bin/env bash
# Build the endpoint's base image locally, for hosts that cannot pull from a registry:
# a Debian bookworm minbase root file system with python3 and python3-venv (debootstrap,
# from the Debian mirror this host's apt already uses), imported with `docker import`.
#
#   containers/build-base.sh [IMAGE]        (default: migmatrix-base:bookworm)
#
# Skips the build when the image exists (set MIGMATRIX_REBUILD=1 to force it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
image="${1:-migmatrix-base:bookworm}"
if [ -z "${MIGMATRIX_REBUILD:-}" ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image exists" >&2
    exit 0
fi
command -v debootstrap >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

# The Debian mirror apt uses here.
mirror="$("$here/debian-mirror.sh")"

work="$(mktemp -d /tmp/migmatrix-rootfs.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
echo "debootstrap bookworm from $mirror" >&2
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 40 "$work/debootstrap.log" >&2; exit 1; }
# Leave out what a container never needs: apt lists and caches, docs, man pages, locales.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'en*' -exec rm -rf {} + 2>/dev/null || true
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$image" >/dev/null
echo "built $image" >&2
