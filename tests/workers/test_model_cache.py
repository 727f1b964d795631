from __future__ import annotations

import threading
import time

import pytest

from workers.model_cache import ModelCache


def _cache(budget: int, sizes: dict[str, int], delay: float = 0.0) -> ModelCache[str, str]:
    def load(key: str) -> str:
        time.sleep(delay)
        if key == "broken":
            raise ValueError("broken model")
        return f"model-{key}"

    return ModelCache(load, budget, sizer=lambda m: sizes[m.removeprefix("model-")])


def test_lru_by_bytes_under_the_budget() -> None:
    cache = _cache(100, {"a": 40, "b": 40, "c": 40})
    for key in "ab":
        with cache.use(key):
            pass
    with cache.use("a"):  # a becomes most recent
        pass
    with cache.use("c"):
        pass
    assert cache.warm() == ["a", "c"] and cache.used_bytes == 80


def test_a_model_in_use_is_never_evicted() -> None:
    cache = _cache(50, {"a": 40, "b": 40})
    held = cache.acquire("a")
    with cache.use("b"):
        assert set(cache.warm()) == {"a", "b"}  # over budget, but both in use
    assert set(cache.warm()) == {"a", "b"}  # b is the most recent: kept; a still in use
    cache.release("a")
    with cache.use("b"):
        pass
    assert cache.warm() == ["b"] and held == "model-a"


def test_concurrent_requests_load_once() -> None:
    cache = _cache(10**9, {"a": 1}, delay=0.2)
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.acquire("a"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == ["model-a"] * 8 and cache.loads == 1


def test_a_failed_load_reaches_every_waiter_and_is_retried_later() -> None:
    cache = _cache(100, {}, delay=0.1)
    errors = []

    def get() -> None:
        try:
            cache.acquire("broken")
        except ValueError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=get) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["broken model"] * 4 and cache.warm() == []
    with pytest.raises(ValueError):
        cache.acquire("broken")


def test_evictions_are_reported_outside_the_lock() -> None:
    sizes = {"a": 40, "b": 40, "c": 40}
    calls: list[tuple[list[str], bool]] = []

    def on_evict() -> None:
        free = cache._lock.acquire(blocking=False)  # a callback under the lock would find it held
        if free:
            cache._lock.release()
        calls.append((cache.warm() if free else [], free))

    cache = ModelCache(lambda key: f"model-{key}", 100, sizer=lambda m: sizes[m.removeprefix("model-")],
                       on_evict=on_evict)
    for key in "ab":
        with cache.use(key):
            pass
    assert calls == []  # within budget: nothing evicted, nothing reported
    held = cache.acquire("c")  # over budget: a goes as c is loaded
    assert calls == [(["b", "c"], True)]
    cache.release("c")
    with cache.use("c"):  # a hit within budget
        pass
    assert len(calls) == 1 and held == "model-c"
