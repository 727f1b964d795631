"""Choosing how ``predict_batch`` runs a group of same-shape items, by measuring the choices on real batches.

A backend offers :class:`~engine.backends.base.RunLayout` candidates for a
group (one run with all items, one item per run, lanes side by side …);
which is fastest depends on the model and the machine (large activations
leave the caches when stacked, thin graphs scale badly over threads). Like
cuDNN's autotuner, :class:`RunTuner` tries each candidate ``trials`` times
on the batches that come (round robin, so the machine's noise hits all of
them alike), then keeps the one with the lowest median time per item for
that kind of group. Groups are told apart by their items' input shapes and
by their size, rounded down to a power of two.

What it keeps can be saved (:meth:`RunTuner.to_json`) and given to a later
tuner (:meth:`RunTuner.load`): the compiled-model cache keeps it beside its
entry, so a restarted worker, or the next ``corral run``, does not measure
again.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.backends.base import RunLayout

TRIALS = 3


def size_class(items: int) -> int:
    """``items`` rounded down to a power of two: groups of 8..15 items share their measurements."""
    return 1 << (max(1, items).bit_length() - 1)


@dataclass
class _Trials:
    candidates: list[RunLayout]
    seconds_per_item: dict[RunLayout, list[float]] = field(default_factory=dict)
    chosen: RunLayout | None = None


class RunTuner:
    """Per kind of group: the candidates' measured times, then the one kept."""

    def __init__(self, trials: int = TRIALS) -> None:
        self.trials = max(1, int(trials))
        self._groups: dict[Hashable, _Trials] = {}
        self._lock = threading.Lock()

    def choose(self, key: Hashable, candidates: Sequence[RunLayout]) -> RunLayout:
        """The layout to use for the next group of kind ``key``: the kept one, else the least tried."""
        if len(candidates) == 1:
            return candidates[0]
        with self._lock:
            state = self._groups.get(key)
            if state is None or state.candidates != list(candidates):
                state = self._groups[key] = _Trials(list(candidates))
            if state.chosen is not None:
                return state.chosen
            return min(state.candidates, key=lambda c: len(state.seconds_per_item.get(c, ())))

    def record(self, key: Hashable, layout: RunLayout, seconds: float, items: int) -> bool:
        """One group of ``items`` ran with ``layout`` in ``seconds``; decides once every candidate has its trials.

        True when this call made the decision.
        """
        with self._lock:
            state = self._groups.get(key)
            if state is None or state.chosen is not None or layout not in state.candidates:
                return False
            state.seconds_per_item.setdefault(layout, []).append(seconds / max(1, items))
            if all(len(state.seconds_per_item.get(c, ())) >= self.trials for c in state.candidates):
                state.chosen = min(state.candidates, key=lambda c: statistics.median(state.seconds_per_item[c]))
                return True
            return False

    def load(self, kept: Sequence[tuple[Hashable, RunLayout, Sequence[RunLayout]]]) -> None:
        """Take earlier decisions: (kind of group, the layout kept, the candidates it was chosen from)."""
        with self._lock:
            for key, layout, candidates in kept:
                if layout in candidates:
                    self._groups[key] = _Trials(list(candidates), chosen=layout)

    def to_json(self) -> list[dict[str, Any]]:
        """The decisions, for :func:`from_json`; keys must be nests of tuples of str and int."""
        with self._lock:
            return [{"key": _plain(k), "chosen": [s.chosen.lanes, s.chosen.per_run],
                     "candidates": [[c.lanes, c.per_run] for c in s.candidates]}
                    for k, s in self._groups.items() if s.chosen is not None]

    def chosen(self) -> dict[Hashable, RunLayout]:
        """The layouts kept so far, by kind of group."""
        with self._lock:
            return {k: s.chosen for k, s in self._groups.items() if s.chosen is not None}


def from_json(data: Any) -> list[tuple[Hashable, RunLayout, list[RunLayout]]]:
    """Decisions saved by :meth:`RunTuner.to_json`; entries that do not read back are left out."""
    kept = []
    for entry in data if isinstance(data, list) else []:
        try:
            layouts = [RunLayout(int(a), None if b is None else int(b)) for a, b in entry["candidates"]]
            chosen = RunLayout(int(entry["chosen"][0]), None if entry["chosen"][1] is None else int(entry["chosen"][1]))
            kept.append((_hashable(entry["key"]), chosen, layouts))
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return kept


def _plain(key: Any) -> Any:
    return [_plain(k) for k in key] if isinstance(key, (tuple, list)) else key


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key
