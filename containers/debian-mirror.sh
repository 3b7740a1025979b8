#!/usr/bin/env bash
# Print the Debian mirror apt uses on this machine (deb822 .sources files first, then
# one-line lists), for debootstrap. MIGMATRIX_DEBIAN_MIRROR overrides it.
set -euo pipefail
mirror="${MIGMATRIX_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        mirror="$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' "$f")"
        [ -n "$mirror" ] && break
    done
fi
if [ -z "$mirror" ]; then
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) {print $i; exit}}' \
        | head -n 1)"
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt; set MIGMATRIX_DEBIAN_MIRROR" >&2; exit 1; }
echo "$mirror"
