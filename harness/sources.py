"""A digest of this checkout's package sources.

The endpoint image is labelled with it (``migmatrix.source``) so that a stale image is
noticed rather than tested. Standard library only: ``containers/build-endpoint.sh`` runs it
with whatever Python builds the image, before any of the project's dependencies exist.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["source_digest"]


def source_digest() -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
