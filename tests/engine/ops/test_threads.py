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


def test_blas_is_held_to_one_thread_whichever_thread_runs_the_tiles(three_threads: None) -> None:
    """threadpoolctl lets only one Python thread change OpenBLAS's pool; the engine's hold must work from the
    others too (a worker's device thread, a web app's request threads)."""
    from threadpoolctl import ThreadpoolController

    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    before = [lib.get_num_threads() for lib in libs]
    for lib, count in zip(libs, before):
        lib.set_num_threads(count)  # this thread takes control of the pool, as a first prediction would
    seen: list[list[int]] = []
    lock = threading.Lock()

    def tile(i: int) -> None:
        with lock:
            seen.append([lib.get_num_threads() for lib in libs])

    caller = threading.Thread(target=threads.run_tiles, args=(tile, range(64)),
                              kwargs={"work": threads.PARALLEL_MIN_WORK})
    caller.start()
    caller.join()
    assert len(seen) == 64 and all(counts == [1] * len(libs) for counts in seen)
    assert [lib.get_num_threads() for lib in libs] == before  # restored once the tiles are done
