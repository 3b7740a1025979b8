"""Deterministic shards of a matrix: which of N CI jobs runs which cell.

A cell belongs to one shard, decided by its id alone (SHA-256, not Python's ``hash()``),
so N jobs that each pick their own shard cover every cell exactly once, in any process or
Python version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["shard_cells", "shard_of"]

def shard_of(cell_id: str, count: int) -> int:
    """The 1-based shard that owns `cell_id` among `count` shards.

    A SHA-256 of the id, not Python's hash(): it must be the same in every CI job,
    process and Python version, so that N jobs that each pick their own shard cover every
    cell exactly once.

    >>> shard_of("0.14/pc->new/pc[idle]", 1)
    1
    """
    if count < 1:
        raise ValueError(f"shard count must be at least 1, got {count}")
    digest = hashlib.sha256(cell_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def _cell_id(cell: Any) -> str:
    if isinstance(cell, str):
        return cell
    if isinstance(cell, Mapping):
        return str(cell["id"])
    return str(cell.id)


def shard_cells(cells: Iterable[Any], index: int, count: int) -> list[Any]:
    """The cells of shard `index` (1-based, as `--shard I/N` and GitLab's CI_NODE_INDEX).

    Cells may be result dicts, strings (ids) or objects with an `id` attribute. Order is
    kept. Each cell goes to exactly one shard, decided by its id alone.
    """
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: index must be within 1..count")
    return [cell for cell in cells if shard_of(_cell_id(cell), count) == index]
