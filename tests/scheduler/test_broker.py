from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from kombu import Producer, Queue

from scheduler.broker import QueueConfig, RedisTransport, make_app
from scheduler.embedded import EmbeddedRedis


def test_delivery_settings() -> None:
    app = make_app(QueueConfig(redis_url="redis://example:1/0", visibility_timeout=10))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.task_ignore_result
    assert conf.worker_prefetch_multiplier == 1
    opts = conf.broker_transport_options
    assert opts["visibility_timeout"] == 10 and opts["priority_steps"] == list(range(10))
    assert opts["unacked_restore_interval"] <= 5  # a short timeout also sweeps often


@pytest.mark.parametrize("settle", ["ack", "reject"])
def test_a_failed_ack_or_reject_still_frees_the_prefetch_slot(tmp_path: Path, settle: str) -> None:
    """Redis gone while a chunk finishes: the slot must come back, or a worker whose every slot failed this way
    never sends another BRPOP and so never notices that its connection died (it idles beside a full queue)."""
    server = EmbeddedRedis(state_dir=tmp_path).start()
    try:
        app = make_app(QueueConfig(redis_url=server.url, visibility_timeout=10))
        with app.connection_for_read() as conn:
            assert isinstance(conn.transport, RedisTransport)
            channel = conn.channel()
            channel.basic_qos(prefetch_count=1)
            queue = Queue("corral.test-qos", channel=channel)
            queue.declare()
            Producer(channel).publish({"n": 1}, routing_key=queue.name)
            message = queue.get(no_ack=False)
            assert message is not None and not channel.qos.can_consume()  # the one slot is taken
            server.proc.kill()
            server.proc.wait()
            with pytest.raises(redis.ConnectionError):
                message.ack() if settle == "ack" else message.reject(requeue=True)
            assert channel.qos.can_consume()
    finally:
        server.stop()


def test_a_sweep_lock_left_by_a_dead_sweeper_expires_within_a_few_sweeps(tmp_path: Path) -> None:
    """A sweeper that dies (or loses Redis) mid-sweep leaves kombu's restore lock held; a Redis restored from its
    append-only file keeps it too. Overdue chunks must still come back within seconds, not kombu's 5 minutes."""
    server = EmbeddedRedis(state_dir=tmp_path).start()
    try:
        app = make_app(QueueConfig(redis_url=server.url, visibility_timeout=2))
        with app.connection_for_read() as conn:
            channel = conn.channel()
            queue = Queue("corral.test-sweep", channel=channel)
            queue.declare()
            Producer(channel).publish({"n": 1}, routing_key=queue.name)
            assert queue.get(no_ack=False) is not None  # delivered, never acknowledged: a worker that died
            orphan = channel.client.lock(channel.unacked_mutex_key, timeout=channel.unacked_mutex_expire)
            assert orphan.acquire(blocking=False)  # ... and a sweeper that died holding the lock
            deadline = time.monotonic() + 15
            redelivered = None
            while redelivered is None and time.monotonic() < deadline:
                channel.qos.restore_visible(num=10, interval=1)
                redelivered = queue.get(no_ack=False)
                time.sleep(0.2)
            assert redelivered is not None and redelivered.payload == {"n": 1}
    finally:
        server.stop()


def test_only_plain_redis_urls_get_the_releasing_transport() -> None:
    assert make_app(QueueConfig(redis_url="redis://example:1/0")).conf.broker_transport.endswith(":RedisTransport")
    assert make_app(QueueConfig(redis_url="rediss://example:1/0")).conf.broker_transport is None  # TLS from scheme
