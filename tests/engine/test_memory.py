"""Keeping freed memory for reuse: measured in fresh interpreters, since the allocator's settings are process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine import memory

glibc = pytest.mark.skipif(memory._glibc() is None, reason="the allocator settings are glibc's")

# Allocates, touches and frees a 128 MiB array five times; prints the page faults of the last four rounds and the
# resident memory after the last free, then after release_freed_memory().
PROBE = """
import json, resource, sys
import numpy as np
from engine.memory import release_freed_memory, retain_freed_memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones((32, 1 << 20), np.float32)  # 128 MiB, every page touched
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
held = rss()
released = release_freed_memory()
print(json.dumps({"applied": applied, "faults": sum(faults[1:]), "held": held, "released": released,
                  "after_release": rss()}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


@glibc
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    default, retained = _probe("default"), _probe("retain")
    assert retained["applied"] is True
    # 128 MiB is 32,768 pages of 4 KiB (or 64 huge pages): by default each round maps and faults in fresh memory.
    assert default["faults"] >= 4 * 64
    assert retained["faults"] < 64  # the same block, reused from the heap
    assert retained["held"] - default["held"] > 100 * 2**20  # the price: the freed block stays resident...
    assert retained["released"] is True
    assert retained["held"] - retained["after_release"] > 100 * 2**20  # ...until it is given back


def test_other_allocators_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.retain_freed_memory() is False
    assert memory.release_freed_memory() is False
