"""The Celery app on Redis, built from a :class:`QueueConfig` that producer and workers share.

Delivery settings, and why:

* ``task_acks_late``: a chunk message is acknowledged only after the task
  returns, i.e. after every item in it has its output written and its outcome
  counted. A worker that dies before that leaves the message unacknowledged,
  and Redis redelivers it.
* ``worker_prefetch_multiplier = 1``: each worker thread reserves one chunk
  at a time. Reserved chunks count against the visibility timeout from the
  moment they are fetched, so a deep prefetch buffer would risk redelivering
  chunks that a healthy worker simply had not reached yet.
* ``visibility_timeout`` (default one hour): how long an unacknowledged
  chunk may stay with a worker before Redis gives it to another. It must
  exceed the longest a healthy worker holds a chunk: concurrency × chunk size
  items queued ahead of it on one device, at worst a few seconds each for
  large images on CPU (16 × 32 × 5 s ≈ 43 min). Tests lower it to a few
  seconds so that redelivery after SIGKILL is quick.
* ``unacked_restore_interval`` / ``throttle``: how often a live consumer
  looks for messages whose visibility timeout passed; tied to the timeout
  so a short test timeout also means a quick sweep.
* ``unacked_mutex_expire``: a sweep holds a Redis lock, which it releases in
  milliseconds, but a sweeper that dies or loses Redis mid-sweep leaves it
  held until it expires, and kombu's default expiry is 5 minutes. A Redis
  restored from its append-only file keeps the lock with its deadline, so
  no worker would restore anything for those minutes. Three sweep intervals
  are far longer than a sweep, and two sweeps that overlap anyway restore
  each message once (each restore is a transaction watching the unacked set).
* Priorities: kombu's Redis transport keeps one list per priority step and
  pops lower numbers first; corral's priority 0..9 (9 most urgent) maps to
  kombu priority ``9 - p``.
* ``task_ignore_result``: progress lives in the job record, never in one
  Celery result per image, so no result backend is configured.
* ``broker_transport`` (:class:`RedisTransport`): kombu's Redis transport,
  except that an acknowledgement or rejection that fails because Redis is
  unreachable still frees the worker's prefetch slot. Stock kombu frees the
  slot only after the Redis write succeeds, and Celery only logs "Couldn't
  ack". When Redis restarts while every slot's chunk is finishing, all slots
  leak: the channel sends no BRPOP without a free slot and quietly drops
  its idle socket when the server closes it, so Celery never sees a lost
  connection, and the worker sits idle beside a full queue until restarted.
  No broker setting reaches this: heartbeats and ``health_check_interval``
  watch sockets, and there is none left to watch. With the slot freed, the
  next BRPOP fails, Celery reconnects, and consuming resumes. The chunk
  whose ack failed is still in Redis's unacked set and is redelivered after
  the visibility timeout; items it already recorded are not counted twice
  (the finished set). Only for
  ``redis://`` URLs: kombu derives TLS from the ``rediss`` scheme name,
  which an explicit transport class would bypass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from celery import Celery
from kombu.transport import redis as kombu_redis

from scheduler import keys
from scheduler.settings import DEFAULT_REDIS_URL, DEFAULT_VISIBILITY_TIMEOUT


@dataclass
class QueueConfig:
    """What producer and workers must agree on; the worker's come from :class:`workers.settings.WorkerSettings`."""

    redis_url: str = DEFAULT_REDIS_URL
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    prefetch_multiplier: int = 1


class ReleasingQoS(kombu_redis.QoS):
    """kombu's Redis QoS, except that a failed ack or reject still frees the prefetch slot.

    The parent raises before reaching its local bookkeeping (``_quick_ack``);
    marking the tag only on failure keeps a tag that the event loop already
    flushed from being counted twice. The error still propagates, so Celery
    logs it as before.
    """

    def ack(self, delivery_tag: str) -> None:
        try:
            super().ack(delivery_tag)
        except BaseException:
            self._quick_ack(delivery_tag)
            raise

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except BaseException:
            self._quick_ack(delivery_tag)
            raise


class RedisChannel(kombu_redis.Channel):
    """kombu's channel with :class:`ReleasingQoS`, and one client object for its own bookkeeping.

    kombu builds a new ``redis.Redis`` object for every delivery's unacked
    record and every ack (``conn_or_acquire`` without a client), and building
    one costs more Python than the round trip it serves: about a tenth of a
    busy worker's interpreter time with one-image jobs. redis-py clients are
    thread-safe over their connection pool, so one per pool does the same work.
    """

    QoS = ReleasingQoS
    _shared: tuple[object, object] | None = None  # (the pool it was built on, the client)

    @contextmanager
    def conn_or_acquire(self, client: object = None) -> Iterator[object]:
        if client:
            yield client
            return
        pool = self.pool  # a new pool after a reconnect or fork gets a new client
        if self._shared is None or self._shared[0] is not pool:
            self._shared = (pool, self._create_client())
        yield self._shared[1]


class RedisTransport(kombu_redis.Transport):
    """``redis://`` as kombu ships it, with :class:`ReleasingQoS` on every channel."""

    Channel = RedisChannel


def make_app(config: QueueConfig | None = None) -> Celery:
    config = config or QueueConfig()
    app = Celery("corral", broker=config.redis_url, set_as_current=False)
    sweep = max(1, int(min(10.0, config.visibility_timeout / 2)))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=keys.CPU_QUEUE,
        worker_prefetch_multiplier=config.prefetch_multiplier,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": config.visibility_timeout,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "unacked_restore_interval": sweep,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": 3 * sweep,
            # how long one BRPOP waits for a message: a stopping worker reads the reply of the one in flight
            # first, so this bounds its shutdown (kombu's default, 1 s, made `corral run` stop measurably later)
            "polling_interval": 0.1,
        },
    )
    if urlsplit(config.redis_url).scheme == "redis":  # rediss:// and sentinel:// keep kombu's own transport
        app.conf.broker_transport = f"{__name__}:RedisTransport"
    return app
