"""The batcher with a real compiled model, on fakeredis."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import fakeredis
import numpy as np
import pytest
import redis
from PIL import Image

import engine
from engine.builder import ModelBuilder
from scheduler import keys
from scheduler.jobs import RedisJob
from scheduler.protocol import ChunkItem
from scheduler.records import JobRecord, Outcome
from workers import metrics
from workers.batcher import Batcher
from workers.exceptions import Requeue
from workers.model_cache import ModelCache
from workers.models import LocalModels
from workers.outcomes import OutcomeReporter
from workers.settings import BatcherConfig


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    b = ModelBuilder("tiny")
    x = b.image_input("image", size=(8, 8), height_range=(1, 512), width_range=(1, 512))
    y = b.node("Conv", [x, b.weight("w", np.full((3, 3, 1, 1), 0.1, np.float32))])
    b.image_output(b.node("Sigmoid", [y]), name="out", scale=1 / 255)
    path = tmp_path_factory.mktemp("m") / "tiny.corral"
    engine.save(b.build(), path)
    return str(path)


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def _batcher(r, **cfg) -> Batcher:
    cache = ModelCache(lambda key: engine.compile(engine.load(key)), 10**9)
    return Batcher(r, LocalModels(cache), lambda job: job.model_path, BatcherConfig(**cfg), OutcomeReporter(r, "w1"))


def _job(r, model_path: str, out: Path, job_id: str, total: int) -> JobRecord:
    rec = JobRecord(id=job_id, model=model_path, model_path=model_path, out=str(out), total=total)
    RedisJob.create(r, rec)
    return rec


def _images(d: Path, n: int, size=(6, 5)) -> list[ChunkItem]:
    d.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        p = d / f"i{i}.png"
        Image.new("RGB", size, (i, 2 * i, 3 * i)).save(p)
        items.append(ChunkItem(i, p.name, str(p)))
    return items


def test_items_of_different_jobs_share_a_batch(r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r, max_batch=8, max_delay_ms=200)
    try:
        items = _images(tmp_path / "in", 6)
        jobs = [_job(r, model_path, tmp_path / f"out{j}", f"j{j}", 3) for j in range(2)]
        futs = b.submit(jobs[0], items[:3]) + b.submit(jobs[1], [ChunkItem(k, it.name, it.path)
                                                                  for k, it in enumerate(items[3:])])
        assert [f.result(10) for f in futs] == [Outcome.DONE] * 6
        assert b.batch_sizes == {6: 1}
        assert r.hgetall(keys.worker_batches("w1")) == {b"6": b"1"}
        assert all(RedisJob(r, j.id).load().done == 3 for j in jobs)
        assert sorted(p.name for p in (tmp_path / "out1").iterdir()) == ["i3.png", "i4.png", "i5.png"]
    finally:
        b.close()


def _outstanding(r, job_id: str, chunk: int) -> bool:
    """Whether the chunk still has its record or its claim."""
    return bool(r.hexists(keys.job_chunks(job_id), str(chunk)) or r.hexists(keys.job_claims(job_id), str(chunk)))


def test_a_chunk_is_retired_in_the_round_trip_that_counts_its_last_item(r, model_path: str, tmp_path: Path) -> None:
    """Chunk 0's three items span two batches (max_batch 2): it is retired only with the second. Chunk 1
    of another job settles with the first batch, beside chunk 0's first two items."""
    b = _batcher(r, max_batch=2, max_delay_ms=300)
    try:
        job, other = _job(r, model_path, tmp_path / "out", "j", 3), _job(r, model_path, tmp_path / "o", "k", 1)
        for rec, n in ((job, 0), (other, 1)):
            with r.pipeline() as p:
                RedisJob(r, rec.id).publish_chunks_on(p, [(n, [{"i": 0, "n": "x"}])])
                RedisJob(r, rec.id).claim_on(p, n, "w1")
                p.execute()
        first, second = b.reporter.open_chunk("j", 0, 3), b.reporter.open_chunk("k", 1, 1)
        items = _images(tmp_path / "in", 3)
        futs = b.submit(job, items[:1], first) + b.submit(other, _images(tmp_path / "in2", 1), second)
        assert [f.result(10) for f in futs] == [Outcome.DONE] * 2
        assert second.retired and not _outstanding(r, "k", 1)
        assert not first.retired and _outstanding(r, "j", 0)  # two of its items are still to come
        assert [f.result(10) for f in b.submit(job, items[1:], first)] == [Outcome.DONE] * 2
        assert first.retired and not _outstanding(r, "j", 0)
    finally:
        b.close()


def test_a_chunk_whose_outcomes_could_not_be_counted_is_not_retired(r, model_path: str, tmp_path: Path) -> None:
    """Its task then retires nothing either: the message is handed back and the chunk stays recoverable."""
    down = fakeredis.FakeServer()
    down.connected = False  # every round trip to it fails
    b = _batcher(fakeredis.FakeRedis(server=down), max_batch=4, max_delay_ms=50)
    try:
        job = _job(r, model_path, tmp_path / "out", "j", 1)
        with r.pipeline() as p:
            RedisJob(r, "j").publish_chunks_on(p, [(0, [{"i": 0, "n": "x"}])])
            p.execute()
        release = b.reporter.open_chunk("j", 0, 1)
        [fut] = b.submit(job, _images(tmp_path / "in", 1), release)
        with pytest.raises(redis.ConnectionError):
            fut.result(10)
        assert not release.retired and _outstanding(r, "j", 0)
    finally:
        b.close()


def test_different_shapes_never_share_a_batch_and_max_batch_holds(r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r, max_batch=2, max_delay_ms=100)
    try:
        items = _images(tmp_path / "a", 3, (6, 5)) + [
            ChunkItem(3 + it.index, it.name, it.path) for it in _images(tmp_path / "b", 2, (7, 7))]
        job = _job(r, model_path, tmp_path / "out", "j", 5)
        assert {f.result(10) for f in b.submit(job, items)} == {Outcome.DONE}
        assert b.batch_sizes == {2: 2, 1: 1}
    finally:
        b.close()


def test_a_bad_item_fails_alone(r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r, max_batch=4, max_delay_ms=50)
    try:
        items = _images(tmp_path / "in", 2)
        bad = tmp_path / "in" / "bad.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
        job = _job(r, model_path, tmp_path / "out", "j", 3)
        futs = b.submit(job, items + [ChunkItem(2, "bad.png", str(bad))])
        assert [f.result(10) for f in futs] == [Outcome.DONE, Outcome.DONE, Outcome.FAILED]
        [row] = RedisJob(r, "j").failures()
        assert row["file"] == str(bad) and "bad.png" in row["reason"]
    finally:
        b.close()


def test_waits_at_most_max_delay_for_a_batch_to_fill(r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r, max_batch=64, max_delay_ms=100)
    try:
        job = _job(r, model_path, tmp_path / "out", "j", 1)
        b.submit(job, _images(tmp_path / "warm", 1))[0].result(10)  # load the model first
        job = _job(r, model_path, tmp_path / "out2", "k", 1)
        start = time.monotonic()
        assert b.submit(job, _images(tmp_path / "in", 1))[0].result(10) is Outcome.DONE
        assert 0.09 <= time.monotonic() - start < 1.0
    finally:
        b.close()


def _late_item(tmp_path: Path, index: int, after: float) -> tuple[ChunkItem, threading.Thread]:
    """An item whose file is a FIFO that gets its PNG bytes only ``after`` seconds: its decode blocks until then."""
    path = tmp_path / f"late{index}.png"
    os.mkfifo(path)
    buf = io.BytesIO()
    Image.new("RGB", (6, 5), (9, 9, 9)).save(buf, format="PNG")

    def feed() -> None:
        time.sleep(after)
        with open(path, "wb") as fh:
            fh.write(buf.getvalue())

    return ChunkItem(index, path.name, str(path)), threading.Thread(target=feed, daemon=True)


def test_a_partial_batch_waits_for_items_still_being_decoded(r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r, max_batch=8, max_delay_ms=150, decode_threads=2)
    try:
        b.submit(_job(r, model_path, tmp_path / "w", "w", 1), _images(tmp_path / "warm", 1))[0].result(10)
        b.batch_sizes.clear()
        ready = _images(tmp_path / "in", 1)[0]
        late, feeder = _late_item(tmp_path, 1, after=0.22)  # past max_delay, within twice it
        feeder.start()
        futs = b.submit(_job(r, model_path, tmp_path / "out", "j", 2), [ready, late])
        assert [f.result(10) for f in futs] == [Outcome.DONE, Outcome.DONE]
        assert b.batch_sizes == {2: 1}  # one batch: the first item waited for the second's decode
    finally:
        b.close()


def test_items_still_decoding_extend_the_wait_at_most_to_twice_max_delay(r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r, max_batch=8, max_delay_ms=100, decode_threads=2)
    try:
        b.submit(_job(r, model_path, tmp_path / "w", "w", 1), _images(tmp_path / "warm", 1))[0].result(10)
        b.batch_sizes.clear()
        late, feeder = _late_item(tmp_path, 1, after=1.5)
        feeder.start()
        start = time.monotonic()
        first, second = b.submit(_job(r, model_path, tmp_path / "out", "j", 2), [_images(tmp_path / "in", 1)[0], late])
        assert first.result(10) is Outcome.DONE
        assert 0.19 <= time.monotonic() - start < 1.0  # cut at twice max_delay, not when the late item came
        assert second.result(10) is Outcome.DONE
        assert b.batch_sizes == {1: 2}
    finally:
        b.close()


def test_cancelled_jobs_are_skipped(r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r)
    try:
        job = _job(r, model_path, tmp_path / "out", "j", 2)
        RedisJob(r, "j").cancel()
        assert [f.result(10) for f in b.submit(job, _images(tmp_path / "in", 2))] == [Outcome.SKIPPED] * 2
        assert RedisJob(r, "j").load().skipped == 2 and not (tmp_path / "out").exists()
    finally:
        b.close()


def test_drain_hands_back_what_has_not_started(r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r, max_batch=64, max_delay_ms=5000)
    try:
        job = _job(r, model_path, tmp_path / "out", "j", 3)
        futs = b.submit(job, _images(tmp_path / "in", 3))
        deadline = time.monotonic() + 10
        while b.backlog and sum(len(g) for g in b._groups.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        b.drain()
        for f in futs:
            with pytest.raises(Requeue):
                f.result(10)
        with pytest.raises(Requeue):
            b.submit(job, _images(tmp_path / "more", 1))[0].result(1)
        assert RedisJob(r, "j").load().finished_items == 0
    finally:
        b.close()


def test_one_batch_is_counted_and_observed_once(r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r, max_batch=8, max_delay_ms=200)
    before = metrics.BATCH_SIZE.collect()[0]
    count_before = next(s.value for s in before.samples if s.name.endswith("_count"))
    try:
        job = _job(r, model_path, tmp_path / "out", "j", 5)
        assert {f.result(10) for f in b.submit(job, _images(tmp_path / "in", 5))} == {Outcome.DONE}
        record = RedisJob(r, "j").load()
        assert (record.done, record.status.value) == (5, "done")
        assert r.scard(keys.job_finished("j")) == 5
        after = metrics.BATCH_SIZE.collect()[0]
        samples = {s.name: s.value for s in after.samples if not s.labels.get("le")}
        assert samples["corral_worker_batch_size_count"] == count_before + 1
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"i{i}.png" for i in range(5)]
    finally:
        b.close()


def test_a_job_cancelled_while_its_items_wait_is_skipped_without_a_status_read_per_item(
        r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r, max_batch=64, max_delay_ms=1500)
    try:
        job = _job(r, model_path, tmp_path / "out", "j", 3)
        futs = b.submit(job, _images(tmp_path / "in", 3))
        deadline = time.monotonic() + 10
        while sum(len(g) for g in b._groups.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        RedisJob(r, "j").cancel()  # the status thread sees it before the batch's delay runs out
        assert [f.result(10) for f in futs] == [Outcome.SKIPPED] * 3
        assert RedisJob(r, "j").load().skipped == 3 and not (tmp_path / "out").exists()
    finally:
        b.close()


def test_a_batch_of_several_jobs_is_counted_in_one_round_trip_and_a_job_redis_refuses_is_not_acked(
        r, model_path: str, tmp_path: Path) -> None:
    b = _batcher(r, max_batch=8, max_delay_ms=200)
    try:
        items = _images(tmp_path / "in", 4)
        good, bad = (_job(r, model_path, tmp_path / f"out-{j}", j, 2) for j in ("good", "bad"))
        r.set(keys.job_finished("bad"), "not a set")  # the script's SADD fails for this job alone
        executes = []
        real_pipeline = r.pipeline

        def counting_pipeline(*args, **kwargs):
            pipe = real_pipeline(*args, **kwargs)
            real_execute = pipe.execute
            pipe.execute = lambda *a, **k: executes.append(len(pipe.command_stack)) or real_execute(*a, **k)
            return pipe

        r.pipeline = counting_pipeline
        futs = b.submit(good, items[:2]) + b.submit(bad, [ChunkItem(k, it.name, it.path)
                                                          for k, it in enumerate(items[2:])])
        assert [f.result(10) for f in futs[:2]] == [Outcome.DONE] * 2
        for f in futs[2:]:
            with pytest.raises(Exception, match="WRONGTYPE"):
                f.result(10)
        assert executes == [3]  # two jobs' outcomes and the batch size, one pipeline
        assert RedisJob(r, "good").load().status.value == "done" and RedisJob(r, "bad").load().done == 0
        assert r.hgetall(keys.worker_batches("w1")) == {b"4": b"1"}
    finally:
        b.close()


class _SlowDevice(Batcher):
    """A batcher whose device takes 50 ms a batch, counting items decoded ahead of it."""

    def __init__(self, *args, **kwargs) -> None:
        self.lock = threading.Lock()
        self.decoded = self.started = self.most_ahead = 0
        super().__init__(*args, **kwargs)

    def _feeds(self, job, item, model):
        feeds = super()._feeds(job, item, model)
        with self.lock:
            self.decoded += 1
            self.most_ahead = max(self.most_ahead, self.decoded - self.started)
        return feeds

    def _run(self, batch) -> None:
        with self.lock:
            self.started += len(batch)
        time.sleep(0.05)
        super()._run(batch)


def _slow(r, **cfg) -> _SlowDevice:
    cache = ModelCache(lambda key: engine.compile(engine.load(key)), 10**9)
    return _SlowDevice(r, LocalModels(cache), lambda job: job.model_path, BatcherConfig(**cfg),
                       OutcomeReporter(r, "w1"))


def test_decoding_runs_at_most_decode_ahead_batches_ahead_of_the_device(r, model_path: str, tmp_path: Path) -> None:
    b = _slow(r, max_batch=4, max_delay_ms=5, decode_ahead=2, decode_threads=4)
    try:
        job = _job(r, model_path, tmp_path / "out", "j", 40)
        futs = b.submit(job, _images(tmp_path / "in", 40))
        assert b.backlog >= 30  # accepted at once, though most wait undecoded
        assert [f.result(30) for f in futs] == [Outcome.DONE] * 40
        assert b.most_ahead <= 8  # never more than 2 batches of 4 decoded and waiting for the device
        assert b.decoded == 40 and RedisJob(r, "j").load().done == 40
    finally:
        b.close()


def test_drain_and_close_hand_back_items_still_waiting_to_be_decoded(r, model_path: str, tmp_path: Path) -> None:
    for stop in ("drain", "close"):
        b = _slow(r, max_batch=2, max_delay_ms=5, decode_ahead=1)
        job = _job(r, model_path, tmp_path / stop, stop, 30)
        futs = b.submit(job, _images(tmp_path / f"in-{stop}", 30))
        time.sleep(0.08)
        if stop == "drain":
            b.drain()
        b.close()
        outcomes = [f.exception(10) or f.result() for f in futs]  # every future settles: nothing is lost
        requeued = sum(isinstance(o, Requeue) for o in outcomes)
        assert requeued >= 20 and requeued + outcomes.count(Outcome.DONE) == 30
        assert RedisJob(r, stop).load().done == outcomes.count(Outcome.DONE)


class _TwoInFlight(LocalModels):
    """Models that take two batches at once (as the compute process does), each held until ``release``."""

    batches_in_flight = 2

    def __init__(self, cache: ModelCache) -> None:
        super().__init__(cache)
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.sizes: list[int] = []
        self.release = threading.Semaphore(0)

    def predict_batch(self, key, items):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.sizes.append(len(items))
        self.release.acquire(timeout=30)
        try:
            return super().predict_batch(key, items)
        finally:
            with self.lock:
                self.running -= 1


def test_a_second_full_batch_goes_in_while_one_runs_but_a_partial_one_waits(r, model_path: str,
                                                                           tmp_path: Path) -> None:
    models = _TwoInFlight(ModelCache(lambda key: engine.compile(engine.load(key)), 10**9))
    b = Batcher(r, models, lambda job: job.model_path, BatcherConfig(max_batch=4, max_delay_ms=5),
                OutcomeReporter(r, "w1"))

    def settle(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(models.sizes) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # long past max_delay_ms: a partial batch would have gone by now

    try:
        first = b.submit(_job(r, model_path, tmp_path / "out", "a", 7), _images(tmp_path / "a", 7))
        settle(1)
        assert models.sizes == [4]  # the 3 left keep filling while the models are busy
        models.release.release()
        settle(2)
        assert models.sizes == [4, 3]
        models.release.release()
        assert [f.result(30) for f in first] == [Outcome.DONE] * 7 and models.most == 1
        second = b.submit(_job(r, model_path, tmp_path / "out", "b", 8), _images(tmp_path / "b", 8))
        settle(4)
        assert models.sizes == [4, 3, 4, 4] and models.most == 2  # two full batches in at once
        models.release.release()
        models.release.release()
        assert [f.result(30) for f in second] == [Outcome.DONE] * 8
        assert RedisJob(r, "a").load().done == 7 and RedisJob(r, "b").load().done == 8
    finally:
        b.close()
