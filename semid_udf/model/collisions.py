"""Resolving collisions by meaning (``output.collisions = nearest_free``), one code prefix at
a time (no pyspark import here).

A bucket is the items sharing a full code tuple. With a cap ``C`` (``output.max_bucket_size``),
a bucket above ``C`` keeps the ``C`` items closest to its code (distance to their own last-level
code, then ``item_id``; items already published are never moved and count first) and moves the
others, in that same order, each to the nearest of its own candidate last-level codes (the
encoder's top-k for the item's own prefix, nearest first) whose bucket still has room. A code
is only ever one of the item's candidates; an item with no candidate bucket left with room
stays where it is (and the run then fails on the cap, as ``max_bucket_size`` does). Items of
one prefix only compete with each other, and the order is fixed by distances and ids, so the
same input set gives the same codes whatever the partitioning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Item:
    item_id: object
    code: int  # own last-level code (the nearest)
    candidates: tuple[int, ...]  # last-level codes, nearest first; candidates[0] == code
    distances: tuple[float, ...]  # squared distance to each candidate


@dataclass(frozen=True)
class Move:
    item_id: object
    code: int  # the last-level code the item ends with
    rank: int  # 0: its own code; r: its (r+1)-th nearest candidate
    extra: float  # distance to the new code minus distance to its own code (0 when not moved)


def resolve(items: Sequence[Item], published: dict[int, int], cap: int) -> list[Move]:
    """The last-level code of each of ``items`` (one code prefix), given how many published
    items each last-level code of the prefix already holds."""
    if cap <= 0:
        raise ValueError(f"cap: expected > 0, got {cap}")
    count = dict(published)
    for it in items:
        count[it.code] = count.get(it.code, 0) + 1

    def key(it: Item) -> tuple[Any, ...]:
        return (it.distances[0], _order(it.item_id))

    by_code: dict[int, list[Item]] = {}
    for it in items:
        by_code.setdefault(it.code, []).append(it)
    movers: list[Item] = []
    for code, members in by_code.items():
        room = max(0, cap - published.get(code, 0))
        if len(members) > room:
            movers += sorted(members, key=key)[room:]
    out = {it.item_id: Move(it.item_id, it.code, 0, 0.0) for it in items}
    for it in sorted(movers, key=key):
        for rank in range(1, len(it.candidates)):
            c = it.candidates[rank]
            if count.get(c, 0) < cap:
                count[c] = count.get(c, 0) + 1
                count[it.code] -= 1
                out[it.item_id] = Move(it.item_id, c, rank, float(it.distances[rank] - it.distances[0]))
                break
    return [out[it.item_id] for it in items]


def _order(item_id: object) -> tuple:
    """Ids of one table have one type; order them as the table does (numbers as numbers)."""
    return (0, item_id, "") if isinstance(item_id, (int, float)) else (1, 0, str(item_id))
