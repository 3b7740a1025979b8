#!/usr/bin/env bash
# Build container images holding the QEMU of other Debian releases, from Debian packages
# (no registry): debootstrap --variant=minbase --include=qemu-system-x86 RELEASE, trimmed,
# then `docker import`. The images are endpoints of matrix/qemu-versions.toml.
#
#   containers/qemu/build.sh [RELEASE ...]     (default: bullseye trixie)
#
# Image names: migmatrix-qemu:RELEASE, labelled migmatrix.qemu=<qemu-system-x86 version>.
# Skips an image that exists (MIGMATRIX_REBUILD=1 forces it). Needs a docker engine
# (containers/start-dockerd.sh --no-images) and debootstrap. Measured here: trixie (QEMU
# 10.0) about 40 s, bullseye (QEMU 5.2) about 35 s.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
releases=("$@")
[ ${#releases[@]} -gt 0 ] || releases=(bullseye trixie)
command -v debootstrap >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

# The Debian mirror apt uses here.
mirror="$("$here/../debian-mirror.sh")"

for release in "${releases[@]}"; do
    image="migmatrix-qemu:$release"
    if [ -z "${MIGMATRIX_REBUILD:-}" ] && docker image inspect "$image" >/dev/null 2>&1; then
        echo "$image exists" >&2
        continue
    fi
    work="$(mktemp -d /tmp/migmatrix-qemu.XXXXXX)"
    rootfs="$work/rootfs"
    echo "debootstrap $release with qemu-system-x86 from $mirror" >&2
    start=$(date +%s)
    if ! debootstrap --variant=minbase --include=qemu-system-x86 "$release" "$rootfs" "$mirror" \
            >"$work/debootstrap.log" 2>&1; then
        tail -n 40 "$work/debootstrap.log" >&2
        rm -rf "$work"
        exit 1
    fi
    version="$(chroot "$rootfs" dpkg-query -W -f '${Version}' qemu-system-x86)"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'en*' -exec rm -rf {} + 2>/dev/null || true
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL migmatrix.qemu=$version" \
        --change 'CMD ["qemu-system-x86_64", "--version"]' - "$image" >/dev/null
    rm -rf "$work"
    echo "built $image (qemu-system-x86 $version) in $(( $(date +%s) - start )) s" >&2
done
