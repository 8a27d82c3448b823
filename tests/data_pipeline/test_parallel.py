"""map_in_order: results in order, errors where they belong, bounded work ahead, warnings filters untouched."""

from __future__ import annotations

import itertools
import threading
import warnings

import pytest

from data_pipeline.images import decode_in_order
from data_pipeline.parallel import ITEMS_PER_TASK, TASKS_AHEAD_PER_WORKER, map_in_order
from data_pipeline.sources.folder_source import load_folder
from tests.helpers import SHARED_DATA


def test_results_come_in_the_order_of_the_items_whatever_the_threads():
    for workers in (1, 2, 5):
        assert list(map_in_order(lambda x: x * x, range(1000), workers)) == [x * x for x in range(1000)]


def test_an_error_is_raised_at_its_item_after_the_results_before_it():
    def fail_at_13(x: int) -> int:
        if x == 13:
            raise ValueError("thirteen")
        return x

    taken = []
    with pytest.raises(ValueError, match="thirteen"):
        for result in map_in_order(fail_at_13, range(100), 3):
            taken.append(result)
    assert taken == list(range(13))


def test_an_endless_input_is_read_only_a_bounded_way_ahead():
    started = []
    lock = threading.Lock()

    def record(x: int) -> int:
        with lock:
            started.append(x)
        return x

    results = map_in_order(record, itertools.count(), 2)
    assert [next(results) for _ in range(10)] == list(range(10))
    results.close()
    assert len(started) <= 10 + (TASKS_AHEAD_PER_WORKER * 2 + 1) * ITEMS_PER_TASK


def test_decoding_on_threads_leaves_the_warnings_filters_as_they_were():
    """catch_warnings on decoding threads would race and could leave 'ignore' installed for the whole process."""
    before = list(warnings.filters)
    kather = SHARED_DATA / "kather2016_sample"
    if kather.is_dir():
        load_folder(str(kather), None, 32, skip_bad_files=False)
    assert list(decode_in_order(lambda x: x, range(50))) == list(range(50))
    assert list(warnings.filters) == before
