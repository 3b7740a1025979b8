#!/usr/bin/env bash
# Stop the engine started by start-dockerd.sh (by its pid; nothing else is touched).
set -euo pipefail
dir="${MIGMATRIX_DOCKER_DIR:-/tmp/migmatrix-docker}"
if [ -f "$dir/dockerd.pid" ]; then
    pid="$(cat "$dir/dockerd.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
fi
