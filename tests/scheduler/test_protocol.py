"""Chunk messages as published: a task id naming the chunk, the item references, a short repr for logs."""

from __future__ import annotations

from celery import Celery

from scheduler import protocol


def test_a_chunk_message_names_its_chunk_and_shows_a_short_repr() -> None:
    app = Celery(broker="memory://")
    items = [{"i": i, "n": f"im{i}.jpg", "p": f"/data/im{i}.jpg"} for i in range(40)]
    protocol.send_chunk(app, "0123456789ab", 3, items, queue="corral.cpu", priority=5)
    with app.connection() as conn:
        message = conn.SimpleQueue("corral.cpu").get(timeout=5)
    assert message.headers["id"] == "0123456789ab.3"
    assert protocol.parse_task_id(message.headers["id"]) == ("0123456789ab", 3)
    args, kwargs, _ = message.decode()
    assert args == ["0123456789ab", items] and kwargs == {"chunk": 3}
    # what worker logs and monitoring show: the job and a count, not forty item references
    assert message.headers["argsrepr"] == "['0123456789ab', <40 items>]"
    assert message.headers["kwargsrepr"] == "{'chunk': 3}"


def test_priority_mapping_puts_urgent_first() -> None:
    assert protocol.kombu_priority(9) == 0 and protocol.kombu_priority(0) == 9 and protocol.kombu_priority(42) == 0
