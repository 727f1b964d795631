"""What an item is at each stage of its way through a worker: accepted, decoded, settled.

:class:`workers.batcher.Batcher` takes items as :class:`Accepted`, groups
them as :class:`Decoded` under a :class:`GroupKey`, and hands each outcome
as :class:`Settled` to :class:`workers.outcomes.OutcomeReporter`.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.description import ModelDescription
from scheduler.protocol import ChunkItem
from scheduler.records import ItemOutcome, JobRecord, Outcome

if TYPE_CHECKING:
    from workers.outcomes import ChunkSettlement


@dataclass(eq=False)
class Accepted:
    """An item the batcher took: it resolves ``future`` with its outcome once that is counted."""

    job: JobRecord
    item: ChunkItem
    future: Future[Outcome]
    chunk: ChunkSettlement | None = None  # its chunk, retired with the last of its items' outcomes

    def outcome(self, outcome: Outcome, reason: str = "") -> Settled:
        return Settled(self, ItemOutcome(self.item.index, outcome, self.item.label, reason))

    def failed(self, exc: BaseException) -> Settled:
        return self.outcome(Outcome.FAILED, str(exc) or type(exc).__name__)


@dataclass(eq=False)
class Decoded:
    """An accepted item as its model's input tensors, waiting in its group for a batch."""

    entry: Accepted
    description: ModelDescription
    feeds: dict[str, Any]
    ready_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class GroupKey:
    """Items that may share one batch: the same model, the same non-image inputs, the same tensor shapes."""

    model: Hashable
    inputs: str  # the job's non-image inputs as canonical JSON
    shapes: tuple[tuple[str, tuple[int, ...] | None], ...]


@dataclass(eq=False)
class Settled:
    """An item's outcome, to be counted in its job's record."""

    entry: Accepted
    outcome: ItemOutcome
