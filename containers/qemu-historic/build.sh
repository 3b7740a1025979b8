#!/usr/bin/env bash
# Build the historic QEMU trees from your own QEMU git checkout: qemu-SET/ with
# bin/qemu-system-x86_64, share/qemu/ and BUILDINFO, the layout of the bundles in
# ../shared/qemu-historic/ that the qemu-RELEASE endpoints run.
#
#   containers/qemu-historic/build.sh [--docker] [--out DIR] [--ref SET=REF]... QEMU_GIT_DIR [SET...]
#
# SETs and the refs they build (--ref overrides one, e.g. for a point release or a fork):
#   0.13 v0.13.0 | 0.14 v0.14.0 | 0.15 v0.15.0 | 1.0 v1.0
#   genstats  6026429199db7ff4bb3d1650e82f517d6219fd6b   the Aug 2011 sentinel series (the
#             model's release "new")
#   rhel6.1   8d91b1b2a0348d567e251caa6822c439fbcc281c   RHEL 6 qemu-kvm source imports: these
#   rhel6.2   5dcb26e3c6a4fd3aec9e99a551815baa37c574c8   need a qemu-kvm checkout (`redhat` branch)
# Default SETs: 0.13 0.14 0.15 genstats 1.0. Trees go to --out (default
# $MIGMATRIX_QEMU_HISTORIC, else ./qemu-historic); point MIGMATRIX_QEMU_HISTORIC or a matrix's
# historic_dir at that folder and the endpoints use your builds instead of the bundles.
#
# On the host (default): needs build-essential pkg-config zlib1g-dev libglib2.0-dev python3
# (installed with apt when missing and run as root); 1-2 minutes per SET on 2 cores.
# --docker: builds in a container of a Debian 12 build image made with debootstrap (no
# registry; the engine of containers/start-dockerd.sh), so the host needs no compilers and
# its own libraries never leak into the build; the trees are copied out to --out.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

declare -A REF=(
    [0.13]=v0.13.0 [0.14]=v0.14.0 [0.15]=v0.15.0 [1.0]=v1.0
    [genstats]=6026429199db7ff4bb3d1650e82f517d6219fd6b
    [rhel6.1]=8d91b1b2a0348d567e251caa6822c439fbcc281c
    [rhel6.2]=5dcb26e3c6a4fd3aec9e99a551815baa37c574c8
)
# configure switches: the optional features off (no such libraries, or not buildable on
# Debian 12), per family ...
COMMON="--target-list=x86_64-softmmu --disable-werror --disable-sdl --disable-vnc-tls
 --disable-vnc-sasl --disable-curses --disable-curl --disable-bluez --disable-vde
 --disable-linux-aio --disable-brlapi --disable-xen --disable-check-utests --disable-fdt
 --disable-uuid --disable-vhost-net"
UPSTREAM="--disable-vnc-jpeg --disable-vnc-png --disable-kvm --disable-docs --disable-attr"
# ... and per SET: libcacard does not link against Debian 12's NSS; 1.0's Python 2 code
# generators run under python3 once converted (prepare_1_0); RHEL keeps KVM support.
declare -A CONFIGURE=(
    [0.13]="$COMMON $UPSTREAM"
    [0.14]="$COMMON $UPSTREAM --disable-spice"
    [0.15]="$COMMON $UPSTREAM --disable-spice --disable-smartcard --disable-smartcard-nss --disable-usb-redir --disable-guest-agent"
    [genstats]="$COMMON $UPSTREAM --disable-spice --disable-smartcard --disable-smartcard-nss --disable-usb-redir --disable-guest-agent"
    [1.0]="$COMMON $UPSTREAM --disable-spice --python=python3 --disable-smartcard --disable-smartcard-nss --disable-usb-redir --disable-guest-agent --disable-libiscsi"
    [rhel6.1]="$COMMON --disable-spice --disable-smartcard --disable-smartcard-nss --audio-drv-list="
    [rhel6.2]="$COMMON --disable-spice --disable-smartcard --disable-smartcard-nss --audio-drv-list="
)
BUILD_DEPS="build-essential pkg-config zlib1g-dev libglib2.0-dev python3"
IMAGE="migmatrix-qemu-build:bookworm"

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# -- fixes the old trees need to build on Debian 12 ----------------------------------------

prepare_1_0() {  # scripts/qapi*.py are Python 2; lib2to3 output generates identical files
    python3 -m lib2to3 -w -n scripts/qapi.py scripts/qapi-types.py scripts/qapi-visit.py \
        scripts/qapi-commands.py >/dev/null 2>&1
    printf 'from collections import OrderedDict\n' > scripts/ordereddict.py
}

prepare_rhel6_2() {  # monitor.c uses qxl (spice-only) unconditionally
    python3 - <<'EOF'
import re
src = open("monitor.c").read()
src = src.replace('#include "hw/qxl.h"\n', '#ifdef CONFIG_SPICE\n#include "hw/qxl.h"\n#endif\n', 1)
call = re.search(r"    ret = rhel6_qxl_screendump\([^;]*\);\n", src)
if call:
    src = src.replace(call.group(0), "#ifdef CONFIG_SPICE\n" + call.group(0)
                      + "#else\n    ret = -1;\n#endif\n", 1)
open("monitor.c", "w").write(src)
EOF
}

# -- one tree ------------------------------------------------------------------------------

build_one() {  # SET SOURCE_TAR COMMIT OUT
    local set="$1" tarball="$2" commit="$3" out="$4"
    local work src start
    work="$(mktemp -d /tmp/migmatrix-qemu-$set.XXXXXX)"
    src="$work/qemu-$set"
    start=$(date +%s)
    mkdir -p "$src"
    tar -C "$src" -xf "$tarball"
    (
        cd "$src"
        case "$set" in
            1.0) prepare_1_0 ;;
            rhel6.2) prepare_rhel6_2 ;;
        esac
        # shellcheck disable=SC2086
        ./configure ${CONFIGURE[$set]} \
            "--extra-cflags=-fcommon -fmacro-prefix-map=$src=qemu-$set" >"$work/configure.log" 2>&1 \
            || { tail -n 30 "$work/configure.log" >&2; exit 1; }
        # 0.13 generates config-host.h racily under make -j.
        make config-host.h >"$work/make.log" 2>&1 || true
        make -j"$(nproc)" >>"$work/make.log" 2>&1 || { tail -n 40 "$work/make.log" >&2; exit 1; }
    )
    local tree="$work/tree/qemu-$set"
    mkdir -p "$tree/bin" "$tree/share/qemu"
    install -m 0755 -s "$src/x86_64-softmmu/qemu-system-x86_64" "$tree/bin/"
    # The x86 firmware of that tree's pc-bios/ (and RHEL's CPU model definitions).
    local f
    for f in "$src"/pc-bios/bios.bin "$src"/pc-bios/vgabios*.bin "$src"/pc-bios/pxe-* \
             "$src"/pc-bios/gpxe-* "$src"/pc-bios/linuxboot.bin "$src"/pc-bios/multiboot.bin \
             "$src"/pc-bios/sgabios.bin "$src"/pc-bios/extboot.bin "$src"/pc-bios/vapic.bin \
             "$src"/sysconfigs/target/cpu-x86_64.conf; do
        [ -f "$f" ] && cp "$f" "$tree/share/qemu/"
    done
    if [ ! -f "$tree/share/qemu/sgabios.bin" ] && [ -f "$out/qemu-1.0/share/qemu/sgabios.bin" ]; then
        cp "$out/qemu-1.0/share/qemu/sgabios.bin" "$tree/share/qemu/"  # -nographic wants it
    fi
    {
        echo "set: $set"
        echo "ref: ${REF[$set]}"
        echo "commit: $commit"
        echo "built: $(date +%F) on Debian $(cat /etc/debian_version 2>/dev/null || echo '?'), $(gcc --version | head -n 1)"
        echo "configure: $(sed -n 's/^# Configured with: //p' "$src/config-host.mak" 2>/dev/null)"
        echo "needs at run time: $(ldd "$tree/bin/qemu-system-x86_64" | awk '/=>/ {print $1}' \
            | grep -Ev '^(libc|libm|libpthread|librt|libdl|libutil|libresolv|ld-linux)' | sort | tr '\n' ' ')"
    } > "$tree/BUILDINFO"
    rm -rf "${out:?}/qemu-$set"
    mv "$tree" "$out/qemu-$set"
    rm -rf "$work"
    echo "built $out/qemu-$set ($commit) in $(( $(date +%s) - start )) s" >&2
}

ensure_deps() {
    local missing=()
    dpkg-query -W -f '${Status}\n' $BUILD_DEPS 2>/dev/null | grep -qv "install ok installed" && missing=(x)
    command -v gcc >/dev/null && command -v pkg-config >/dev/null || missing=(x)
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" = 0 ] || { echo "build.sh: install $BUILD_DEPS first (or use --docker)" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $BUILD_DEPS >/dev/null
}

build_image() {  # a Debian 12 image with the build dependencies, without a registry
    command -v debootstrap >/dev/null || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    }
    local work rootfs
    work="$(mktemp -d /tmp/migmatrix-qhb-image.XXXXXX)"
    rootfs="$work/rootfs"
    debootstrap --variant=minbase --include="${BUILD_DEPS// /,}" bookworm "$rootfs" \
        "$("$here/../debian-mirror.sh")" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$IMAGE" >/dev/null
    rm -rf "$work"
}

# -- arguments -----------------------------------------------------------------------------

docker_mode=0
archives=""
out="${MIGMATRIX_QEMU_HISTORIC:-$PWD/qemu-historic}"
while [ $# -gt 0 ]; do
    case "$1" in
        --docker) docker_mode=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --ref) REF[${2%%=*}]="${2#*=}"; shift 2 ;;
        --archives) archives="$2"; shift 2 ;;  # inside the container: SET.tar + SET.commit
        -h|--help) usage ;;
        -*) echo "build.sh: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
if [ -z "$archives" ]; then
    [ $# -ge 1 ] || usage
    git_dir="$1"; shift
    git -C "$git_dir" rev-parse --git-dir >/dev/null 2>&1 \
        || { echo "build.sh: $git_dir is not a git checkout or repository" >&2; exit 2; }
fi
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(0.13 0.14 0.15 genstats 1.0)
for set in "${sets[@]}"; do
    [ -n "${CONFIGURE[$set]:-}" ] || { echo "build.sh: unknown SET $set (known: ${!CONFIGURE[*]})" >&2; exit 2; }
    if [ -z "$archives" ] && ! git -C "$git_dir" rev-parse -q --verify "${REF[$set]}^{commit}" >/dev/null; then
        echo "build.sh: $git_dir has no ${REF[$set]} (for $set)" >&2; exit 2
    fi
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ -n "$archives" ]; then  # inside the build container
    for set in "${sets[@]}"; do
        build_one "$set" "$archives/$set.tar" "$(cat "$archives/$set.commit")" "$out"
    done
    exit 0
fi

ctx="$(mktemp -d /tmp/migmatrix-qhb.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
for set in "${sets[@]}"; do
    git -C "$git_dir" archive --format=tar "${REF[$set]}" > "$ctx/$set.tar"
    git -C "$git_dir" rev-parse "${REF[$set]}^{commit}" > "$ctx/$set.commit"
done
if [ "$docker_mode" = 1 ]; then
    docker image inspect "$IMAGE" >/dev/null 2>&1 || build_image
    cp "$0" "$ctx/build.sh"
    refs=()
    for set in "${sets[@]}"; do refs+=(--ref "$set=${REF[$set]}"); done
    docker run --rm --network none -v "$ctx:/src:ro" -v "$out:/out" "$IMAGE" \
        bash /src/build.sh --archives /src --out /out "${refs[@]}" "${sets[@]}"
    exit 0
fi
ensure_deps
for set in "${sets[@]}"; do
    build_one "$set" "$ctx/$set.tar" "$(cat "$ctx/$set.commit")" "$out"
done
