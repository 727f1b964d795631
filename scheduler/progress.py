"""The live progress bar of `corral wait` / `corral run`: done / failed / total, images/s, ETA."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from scheduler.records import JobRecord


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text(f"{rate:6.1f} img/s" if rate else "     - img/s", style="progress.data.speed")


@contextmanager
def job_progress(console: Console | None = None) -> Iterator[Callable[[JobRecord], None]]:
    """A callback for :meth:`Job.wait` that draws the bar; the bar is removed from view when done."""
    console = console or Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(),
        TextColumn("{task.completed:>5.0f}/{task.total:<5.0f}"),
        TextColumn("[red]{task.fields[failed]} failed"), _RateColumn(), TimeRemainingColumn(),
        console=console, transient=False)
    task_id = None
    first: tuple[float, int] | None = None

    def update(record: JobRecord) -> None:
        nonlocal task_id, first
        finished = record.finished_items
        now = time.monotonic()
        if first is None or finished < first[1]:
            first = (now, finished)
        rate = (finished - first[1]) / (now - first[0]) if now > first[0] and finished > first[1] else 0.0
        if task_id is None:
            task_id = progress.add_task(f"job {record.id}", total=record.total, failed=0, rate=0.0)
        progress.update(task_id, completed=finished, failed=record.failed, rate=rate,
                        description=f"job {record.id} {record.status.value}")

    with progress:
        yield update
