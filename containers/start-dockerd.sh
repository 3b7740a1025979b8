#!/usr/bin/env bash
# Install (if needed) and start a private Docker engine, then build the endpoint images.
#
#   containers/start-dockerd.sh [--no-images]
#
# The engine gets its own data-root, exec-root, pidfile and socket under
# ${MIGMATRIX_DOCKER_DIR:-/tmp/migmatrix-docker}, so it never touches a system engine.
# It runs with --storage-driver=overlay2 (vfs when overlay2 fails; MIGMATRIX_DOCKER_STORAGE
# picks one) --iptables=false --ip6tables=false --bridge=none, which
# works inside an unprivileged-network sandbox. Point clients at it with
#   export DOCKER_HOST=unix://${MIGMATRIX_DOCKER_DIR:-/tmp/migmatrix-docker}/docker.sock
# Stop it with containers/stop-dockerd.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${MIGMATRIX_DOCKER_DIR:-/tmp/migmatrix-docker}"
sock="$dir/docker.sock"
export DOCKER_HOST="unix://$sock"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi

mkdir -p "$dir"
if [ -f "$dir/dockerd.pid" ] && kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; then
    echo "dockerd already running (pid $(cat "$dir/dockerd.pid"))" >&2
else
    start() {  # $1: storage driver
        rm -f "$dir/dockerd.pid" "$sock"
        nohup dockerd \
            --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
            -H "unix://$sock" --storage-driver="$1" \
            --iptables=false --ip6tables=false --bridge=none \
            >"$dir/dockerd.log" 2>&1 &
        for _ in $(seq 1 100); do
            if docker version >/dev/null 2>&1; then return 0; fi
            kill -0 "$!" 2>/dev/null || return 1
            sleep 0.2
        done
        return 1
    }
    # overlay2 starts a container in about 0.7 s here, vfs (which copies the image for
    # every container) in about 3 s; vfs works wherever overlay mounts are refused.
    ok=""
    for driver in ${MIGMATRIX_DOCKER_STORAGE:-overlay2 vfs}; do
        if start "$driver"; then ok="$driver"; break; fi
        echo "dockerd with --storage-driver=$driver did not come up:" >&2
        tail -n 5 "$dir/dockerd.log" >&2
        [ -f "$dir/dockerd.pid" ] && kill "$(cat "$dir/dockerd.pid")" 2>/dev/null || true
        sleep 1
    done
    if [ -z "$ok" ]; then
        echo "dockerd did not come up; its log:" >&2
        tail -n 30 "$dir/dockerd.log" >&2
        exit 1
    fi
    echo "dockerd running (pid $(cat "$dir/dockerd.pid"), storage $ok), DOCKER_HOST=$DOCKER_HOST" >&2
fi

# The data-root outlives the engine: remove cells of an earlier run that was killed.
stale=$(docker ps -aq --filter label=migmatrix)
[ -z "$stale" ] || docker rm -f $stale >/dev/null
docker network prune -f --filter label=migmatrix >/dev/null

if [ "${1:-}" != "--no-images" ]; then
    "$here/build-base.sh"
    "$here/build-endpoint.sh"
fi
