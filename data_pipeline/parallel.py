"""Work spread over one thread per usable core, results in input order (decoding, resizing, stain maps).

Pillow's decoders, libtiff (images.py decodes RGB TIFFs with it) and numpy's array work run outside
the GIL, so threads decode tiles in parallel without the start-up and copying costs of processes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

ITEMS_PER_TASK = 8
TASKS_AHEAD_PER_WORKER = 4  # tasks computed ahead of the consumer, per thread: enough to keep every thread busy


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a SLURM allocation), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def map_in_order(function: Callable[[Item], Result], items: Iterable[Item],
                 workers: int | None = None) -> Iterator[Result]:
    """`function(item)` for each of `items`, in their order, on `workers` threads (default: one per usable core).

    Items go to the threads ITEMS_PER_TASK at a time (a task per item costs about 0.1 ms of handing
    over, as much as decoding a small tile), and at most TASKS_AHEAD_PER_WORKER x workers tasks wait
    to be taken, so memory stays bounded however many items there are. An exception is raised where
    its item's result would have been yielded; closing the iterator early cancels the work not started.
    """
    workers = workers or usable_cores()
    tasks = in_groups(items, ITEMS_PER_TASK)
    pending: collections.deque[concurrent.futures.Future] = collections.deque()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="map_in_order")
    try:
        for group in tasks:
            pending.append(pool.submit(_apply_to_each, function, group))
            if len(pending) >= TASKS_AHEAD_PER_WORKER * workers:
                yield from _results(pending.popleft())
        while pending:
            yield from _results(pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def in_groups(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive lists of `size` of `items`, read lazily (the last list may be shorter)."""
    items = iter(items)
    while group := list(itertools.islice(items, size)):
        yield group


def _apply_to_each(function: Callable[[Item], Result], group: list[Item]) -> list[Result | _Raised]:
    """`function` of each item of `group`; an exception is kept in its item's place, so the items before it count."""
    results: list[Result | _Raised] = []
    for item in group:
        try:
            results.append(function(item))
        except Exception as error:
            results.append(_Raised(error))
            break
    return results


def _results(future: concurrent.futures.Future) -> Iterator[Result]:
    """The results of one task in order, raising the exception its group stopped at."""
    for result in future.result():
        if isinstance(result, _Raised):
            raise result.error
        yield result


@dataclasses.dataclass(frozen=True)
class _Raised:
    """An exception raised by `function` for one item, carried to where that item's result is taken."""

    error: Exception
