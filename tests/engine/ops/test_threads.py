from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from engine.ops import threads


@pytest.fixture
def three_threads() -> Iterator[None]:
    threads.set_num_threads(3)
    try:
        if not threads.can_parallelize():
            pytest.skip("threadpoolctl sees no BLAS library to hold at one thread")
        yield
    finally:
        threads.set_num_threads(None)


def test_every_tile_runs_once_and_the_caller_takes_tiles_too(three_threads: None) -> None:
    ran: Counter[int] = Counter()
    by: set[int] = set()
    lock = threading.Lock()
    gate = threading.Barrier(3, timeout=10)  # passes only when three threads hold a tile at once

    def tile(i: int) -> None:
        with lock:
            ran[i] += 1
            by.add(threading.get_ident())
        if i < 3:
            gate.wait()

    threads.run_tiles(tile, range(200), work=threads.PARALLEL_MIN_WORK)
    assert ran == Counter(range(200))
    assert threading.get_ident() in by and len(by) == 3  # the caller and two helpers


def test_the_first_failure_propagates_and_stops_handing_out_tiles(three_threads: None) -> None:
    ran: list[int] = []

    def tile(i: int) -> None:
        if i == 3:
            raise ValueError("tile 3 broke")
        ran.append(i)

    with pytest.raises(ValueError, match="tile 3 broke"):
        threads.run_tiles(tile, range(10_000), work=threads.PARALLEL_MIN_WORK)
    assert 3 not in ran and len(ran) < 9_999


def test_a_nested_call_runs_serially_on_the_thread_that_made_it(three_threads: None) -> None:
    inner: dict[int, set[int]] = {}
    lock = threading.Lock()

    def outer_tile(i: int) -> None:
        me = threading.get_ident()
        seen: set[int] = set()
        threads.run_tiles(lambda _: seen.add(threading.get_ident()), range(50), work=threads.PARALLEL_MIN_WORK)
        with lock:
            inner[i] = seen
        assert seen == {me}

    threads.run_tiles(outer_tile, range(8), work=threads.PARALLEL_MIN_WORK)
    assert sorted(inner) == list(range(8))


def test_small_work_stays_on_the_calling_thread(three_threads: None) -> None:
    seen: set[int] = set()
    threads.run_tiles(lambda _: seen.add(threading.get_ident()), range(100), work=threads.PARALLEL_MIN_WORK - 1)
    assert seen == {threading.get_ident()}
