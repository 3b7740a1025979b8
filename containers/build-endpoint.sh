#!/usr/bin/env bash
# Build the endpoint image from this checkout: wheels on the host, no network in the build.
#
#   containers/build-endpoint.sh [IMAGE] [BASE]
#       IMAGE default migmatrix-endpoint:latest
#       BASE  default migmatrix-base:bookworm (build-base.sh), e.g. python:3.11-slim
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
image="${1:-migmatrix-endpoint:latest}"
base="${2:-${MIGMATRIX_BASE_IMAGE:-migmatrix-base:bookworm}}"
python="${PYTHON:-python3}"

ctx="$(mktemp -d /tmp/migmatrix-build.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
"$python" -m pip wheel --quiet --disable-pip-version-check "$root" -w "$ctx/wheels"
cp "$here/Dockerfile" "$ctx/Dockerfile"
digest="$(cd "$root" && "$python" -c 'from harness.sources import source_digest; print(source_digest())')"
# The legacy builder (no BuildKit here); RUN steps get no network: none is needed.
DOCKER_BUILDKIT=0 docker build --quiet --network none --build-arg "BASE=$base" \
    --label "migmatrix.source=$digest" \
    -t "$image" "$ctx" >/dev/null
echo "built $image (from $base)" >&2
