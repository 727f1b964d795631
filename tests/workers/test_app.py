from __future__ import annotations

import click
import pytest

from workers.app import QueueConfig, kombu_priority, make_app
from workers.cli import parse_size


def test_delivery_settings() -> None:
    app = make_app(QueueConfig(redis_url="redis://example:1/0", visibility_timeout=10))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.task_ignore_result
    assert conf.worker_prefetch_multiplier == 1
    opts = conf.broker_transport_options
    assert opts["visibility_timeout"] == 10 and opts["priority_steps"] == list(range(10))
    assert opts["unacked_restore_interval"] <= 5  # a short timeout also sweeps often


def test_priority_mapping_puts_urgent_first() -> None:
    assert kombu_priority(9) == 0 and kombu_priority(0) == 9 and kombu_priority(42) == 0


def test_parse_size() -> None:
    assert parse_size("2GiB") == 2 * 1024**3 and parse_size("512M") == 512 * 1024**2
    assert parse_size("1.5gb") == 1_500_000_000 and parse_size("1000") == 1000
    with pytest.raises(click.BadParameter):
        parse_size("lots")
