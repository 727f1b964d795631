"""``python -m scheduler`` is the ``corral`` command (used to start worker subprocesses portably)."""

from scheduler.cli import main

main()
