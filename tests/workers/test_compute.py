"""The compute process: a real child (``python -m workers.compute_child``) against models in this process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from engine.backends.base import cpu_run_items
from engine.builder import ModelBuilder
from engine.exceptions import ModelFormatError
from store.fetch import ModelFetcher
from store.settings import StoreClientSettings
from workers import metrics
from workers.compute import (
    START_FAILURES,
    ComputeProcess,
    ComputeSettings,
    extent,
    layout_size,
    pack,
    unpack,
)
from workers.exceptions import ComputeProcessError
from workers.model_cache import ModelCache
from workers.models import LocalModels, load_model
from workers.settings import compute_process_supported as supported

pytestmark = pytest.mark.skipif(not supported(), reason="the compute process needs memfd_create (Linux)")

def conv_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    b = ModelBuilder("conv")
    x = b.image_input("image", size=(16, 16), height_range=(1, 2048), width_range=(1, 2048))
    y = b.node("Conv", [x, b.weight("w1", (rng.standard_normal((8, 3, 3, 3)) * 0.1).astype(np.float32))],
               pads=[1, 1, 1, 1])
    y = b.node("Conv", [y, b.weight("w2", (rng.standard_normal((3, 8, 1, 1)) * 0.1).astype(np.float32))])
    b.image_output(b.node("Sigmoid", [y]), name="out", scale=1 / 255)
    engine.save(b.build(), path)
    return path


def widen_model(path: Path, copies: int = 16) -> Path:
    """x [4] -> y [4 * copies]: outputs far larger than inputs."""
    b = ModelBuilder("widen")
    x = b.array_input("x", (4,))
    b.array_output(b.node("Concat", [x] * copies, axis=1), name="y", shape=(4 * copies,))
    engine.save(b.build(), path)
    return path


def crash_model(path: Path) -> Path:
    b = ModelBuilder("crash")
    x = b.array_input("x", (4,))
    b.array_output(b.custom_layer("HalveOrCrash", [x]), name="y", shape=(4,))
    engine.save(b.build(), path)
    return path


def key(path: Path) -> tuple[str, str, str, str]:
    return (str(path), "numpy", "cpu", "fp32")


@pytest.fixture
def store(tmp_path: Path) -> StoreClientSettings:
    return StoreClientSettings(root=tmp_path / "store", cache_dir=tmp_path / "cache")


@pytest.fixture
def compute(store: StoreClientSettings) -> Iterator[ComputeProcess]:
    proc = ComputeProcess(ComputeSettings(2**30, store))
    proc.start()
    yield proc
    proc.close()


def test_layouts_round_trip_through_a_buffer() -> None:
    items = [{"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.int64(7)},
             {"a": np.ones((1, 5), np.float16), "b": np.array([1, 2], np.int32)}]
    buf = np.zeros(layout_size(items), np.uint8)
    layouts = pack(items, buf)
    assert all(offset % 64 == 0 for lay in layouts for offset, _, _ in lay.values())
    assert extent(layouts) == layouts[1]["b"][0] + 8 <= buf.size
    for got, want in zip(unpack(buf, layouts), items):
        for name, value in want.items():
            assert got[name].dtype == np.asarray(value).dtype
            np.testing.assert_array_equal(got[name], value)


def test_batches_match_the_same_model_in_this_process(compute: ComputeProcess, store: StoreClientSettings,
                                                      tmp_path: Path) -> None:
    model = conv_model(tmp_path / "conv.corral")
    local = LocalModels(ModelCache(lambda k: load_model(ModelFetcher.from_settings(store), k), 2**30))
    assert compute.description(key(model)) == local.description(key(model))
    rng = np.random.default_rng(1)
    for n, side in ((1, 16), (5, 16), (3, 200)):  # 3 × 200²: inputs outgrow the first buffer
        items = [{"image": rng.random((3, side, side), dtype=np.float32)} for _ in range(n)]
        got, want = compute.predict_batch(key(model), items), local.predict_batch(key(model), items)
        assert len(got) == n
        for g, w in zip(got, want):
            assert g["out"].flags.writeable and g["out"].dtype == np.float32
            np.testing.assert_array_equal(g["out"], w["out"])  # bit-identical: the same compiled code ran
    assert compute.warm() == [key(model)] and compute.used_bytes > 0


def test_outputs_too_large_for_the_buffer_still_arrive_and_make_room(compute: ComputeProcess,
                                                                    tmp_path: Path) -> None:
    model = widen_model(tmp_path / "widen.corral", copies=4096)  # 64 KiB out per item, 16 B in
    items = [{"x": np.full(4, i, np.float32)} for i in range(32)]  # 2 MiB of outputs: over the first 1 MiB
    first = compute.predict_batch(key(model), items)
    again = compute.predict_batch(key(model), items)
    for i, (a, b) in enumerate(zip(first, again)):
        np.testing.assert_array_equal(a["y"], np.full(4 * 4096, i, np.float32))
        np.testing.assert_array_equal(b["y"], a["y"])
    assert compute._buffers["out0"].size >= 32 * 64 * 1024  # one batch at a time here: always the first slot


def test_the_input_buffer_grows_between_batches(compute: ComputeProcess, tmp_path: Path) -> None:
    b = ModelBuilder("identity")
    b.array_output(b.node("Identity", [b.array_input("x", (4096,))]), name="y", shape=(4096,))
    engine.save(b.build(), tmp_path / "identity.corral")
    model = tmp_path / "identity.corral"
    for n in (1, 80, 2, 300, 1):  # 16 KiB items: the first 1 MiB buffer is replaced twice
        items = [{"x": np.full(4096, i, np.float32)} for i in range(n)]
        results = compute.predict_batch(key(model), items)
        assert [float(r["y"][0]) for r in results] == list(range(n))
    assert compute._buffers["in0"].size >= 300 * 16384 and compute.restarts == 0


def test_a_bad_item_fails_alone(compute: ComputeProcess, tmp_path: Path) -> None:
    model = conv_model(tmp_path / "conv.corral")
    good = np.random.default_rng(2).random((3, 16, 16), dtype=np.float32)
    results = compute.predict_batch(key(model), [{"image": good}, {"image": np.zeros((2, 4, 4), np.float32)},
                                                 {"image": good}])
    assert isinstance(results[1], Exception) and "'image'" in str(results[1])
    np.testing.assert_array_equal(results[0]["out"], results[2]["out"])


def test_a_model_that_cannot_load_is_named_and_not_cached(compute: ComputeProcess, tmp_path: Path) -> None:
    missing = tmp_path / "later.corral"
    with pytest.raises(ModelFormatError, match="later.corral"):
        compute.description(key(missing))
    conv_model(missing)  # the next request tries again
    assert compute.description(key(missing)).image_inputs[0].name == "image"


def test_concurrent_first_requests_load_once(compute: ComputeProcess, tmp_path: Path) -> None:
    model = conv_model(tmp_path / "conv.corral")
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(compute.description(key(model)))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(d == got[0] for d in got)
    compiles = sum(s.value for family in compute.state.metrics if family.name == "corral_worker_model_compile_seconds"
                   for s in family.samples if s.name.endswith("_count"))
    assert compiles == 1


def test_a_crash_fails_only_the_item_that_causes_it_and_the_next_batch_runs_in_a_new_process(
        store: StoreClientSettings, tmp_path: Path, crash_plugin: str) -> None:
    model = crash_model(tmp_path / "crash.corral")
    compute = ComputeProcess(ComputeSettings(2**30, store, plugins=(crash_plugin,)))
    try:
        first = compute.pid if compute.description(key(model)) else None
        ok = {"x": np.full(4, 0.5, np.float32)}
        np.testing.assert_array_equal(compute.predict_batch(key(model), [ok])[0]["y"], np.full(4, 0.25, np.float32))
        # the batch crashes its child; its items run again alone, and only the crashing one crashes again
        crashed, fine = compute.predict_batch(key(model), [{"x": np.ones(4, np.float32)}, ok])
        assert isinstance(crashed, ComputeProcessError)
        assert "crash.corral" in str(crashed) and "SIGKILL" in str(crashed)
        np.testing.assert_array_equal(fine["y"], np.full(4, 0.25, np.float32))
        assert compute.restarts == 2
        np.testing.assert_array_equal(compute.predict_batch(key(model), [ok])[0]["y"], np.full(4, 0.25, np.float32))
        assert compute.pid != first and compute.restarts == 2
    finally:
        compute.close()


def test_a_batch_waiting_behind_one_that_crashes_runs_in_the_next_process(
        store: StoreClientSettings, tmp_path: Path, crash_plugin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two batches in flight: the child dies running the first while the second waits in its queue. The second
    was never run, so it is not failed: it runs in the next child."""
    gate = tmp_path / "crash-now"
    monkeypatch.setenv("CORRAL_TEST_CRASH_GATE", str(gate))
    model = key(crash_model(tmp_path / "crash.corral"))
    compute = ComputeProcess(ComputeSettings(2**30, store, plugins=(crash_plugin,)))
    try:
        compute.description(model)
        results: dict[str, list] = {}
        crash = threading.Thread(target=lambda: results.update(crash=compute.predict_batch(
            model, [{"x": np.ones(4, np.float32)}])))
        crash.start()
        while len(compute._pending) < 1:
            time.sleep(0.01)
        waiting = threading.Thread(target=lambda: results.update(waiting=compute.predict_batch(
            model, [{"x": np.full(4, 0.5, np.float32)}, {"x": np.full(4, 0.25, np.float32)}])))
        waiting.start()
        while len(compute._pending) < 2:  # both batches sent: the first crashes only now
            time.sleep(0.01)
        gate.touch()
        crash.join(60)
        waiting.join(60)
        [crashed] = results["crash"]
        assert isinstance(crashed, ComputeProcessError) and "SIGKILL" in str(crashed)
        assert [r["y"][0] for r in results["waiting"]] == [0.25, 0.125]
        assert compute.restarts == 1
    finally:
        compute.close()


def test_a_child_that_dies_while_starting_is_not_restarted_in_a_loop(store: StoreClientSettings,
                                                                      tmp_path: Path) -> None:
    compute = ComputeProcess(ComputeSettings(2**30, store, plugins=("corral_no_such_plugin_module",)))
    model = key(conv_model(tmp_path / "conv.corral"))
    try:
        pids = []
        for _ in range(START_FAILURES):
            with pytest.raises(ComputeProcessError, match="exit code 1"):
                compute.description(model)
            pids.append(compute.pid)
        assert len(set(pids)) == START_FAILURES  # a new child each time, until...
        [held] = compute.predict_batch(model, [{"image": np.zeros((3, 4, 4), np.float32)}])
        assert isinstance(held, ComputeProcessError) and "died while starting" in str(held)
        assert compute.pid == pids[-1]  # ...no new one is started for a while
    finally:
        compute.close()


def test_close_ends_the_child(compute: ComputeProcess, tmp_path: Path) -> None:
    compute.description(key(conv_model(tmp_path / "conv.corral")))
    child = compute._proc
    assert child is not None and child.poll() is None
    compute.close()
    assert child.poll() == 0
    [late] = compute.predict_batch(key(tmp_path / "conv.corral"), [{"image": np.zeros((3, 4, 4), np.float32)}])
    assert isinstance(late, ComputeProcessError) and "closed" in str(late)
    with pytest.raises(ComputeProcessError, match="closed"):
        compute.description(key(tmp_path / "other.corral"))


def test_the_child_exits_when_its_worker_is_killed(store: StoreClientSettings) -> None:
    script = textwrap.dedent(f"""
        import time
        from store.settings import StoreClientSettings
        from workers.compute import ComputeProcess, ComputeSettings
        proc = ComputeProcess(ComputeSettings(2**30, StoreClientSettings(root={str(store.root)!r})))
        proc.start()
        print(proc.pid, flush=True)
        time.sleep(60)
    """)
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(worker.stdout.readline())  # type: ignore[union-attr]
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 20
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the compute process outlived its worker"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_batches_reuse_the_compute_process_memory(compute: ComputeProcess, tmp_path: Path) -> None:
    """The child keeps freed memory (engine.memory): a batch's 32 MiB activations come from the last batch's
    pages, not from fresh mappings the kernel must fault in (by default, 2 × 33.5 MiB per batch here)."""
    model = conv_model(tmp_path / "conv.corral")
    items = [{"image": np.random.default_rng(i).random((3, 512, 512), dtype=np.float32)} for i in range(4)]
    for _ in range(2):  # buffers mapped, plans recorded, the heap grown to a batch's peak
        compute.predict_batch(key(model), items)
    before = _minor_faults(compute.pid)
    for _ in range(3):
        compute.predict_batch(key(model), items)
    assert _minor_faults(compute.pid) - before < 64


def _minor_faults(pid: int | None) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def test_two_batches_in_flight_use_their_own_buffers(compute: ComputeProcess, tmp_path: Path) -> None:
    """Two threads predicting at once (the batcher's dispatch threads): the second batch waits in the child
    in the other slot's buffers, and each gets its own outputs."""
    b = ModelBuilder("identity")
    b.array_output(b.node("Identity", [b.array_input("x", (4096,))]), name="y", shape=(4096,))
    engine.save(b.build(), tmp_path / "identity.corral")
    model = key(tmp_path / "identity.corral")
    compute.description(model)
    errors: list[str] = []

    def run(base: int) -> None:
        for k in range(20):
            n = 1 + (base + k) % 7
            items = [{"x": np.full(4096, base * 1000 + k * 10 + i, np.float32)} for i in range(n)]
            got = [float(r["y"][0]) for r in compute.predict_batch(model, items)]
            if got != [base * 1000 + k * 10 + i for i in range(n)]:
                errors.append(f"thread {base}, batch {k}: {got}")

    threads = [threading.Thread(target=run, args=(base,)) for base in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {"in0", "in1", "out0", "out1"} <= set(compute._buffers) and compute.restarts == 0


def _histogram(metric: Any) -> tuple[float, float]:
    """(count, sum) of a Prometheus histogram now."""
    samples = {s.name: s.value for s in metric.collect()[0].samples if not s.labels.get("le")}
    return next(v for k, v in samples.items() if k.endswith("_count")), next(
        v for k, v in samples.items() if k.endswith("_sum"))


def test_the_runs_the_engine_made_in_the_child_reach_the_worker_metrics(compute: ComputeProcess,
                                                                       tmp_path: Path) -> None:
    model = conv_model(tmp_path / "conv.corral")
    side = 256
    at_most = cpu_run_items(3 * side * side)  # items one CPU run stacks at this size
    rng = np.random.default_rng(3)
    items = [{"image": rng.random((3, side, side), dtype=np.float32)} for _ in range(10)]
    count, total = _histogram(metrics.RUN_SIZE)
    assert len(compute.predict_batch(key(model), items)) == 10
    runs, items_run = (a - b for a, b in zip(_histogram(metrics.RUN_SIZE), (count, total)))
    assert items_run == 10 and runs >= -(-10 // at_most) > 1  # one batch of 10, split into runs by the engine
