"""``corral model``: import, inspect, quantize and run models on this machine, without the job queue.

Every option is also read from ``CORRAL_MODEL_<COMMAND>_<OPTION>`` (for
example ``CORRAL_MODEL_RUN_BACKEND``), through the root group's
``auto_envvar_prefix``.
"""

from __future__ import annotations

import click

from engine.cli.import_cmd import import_
from engine.cli.inspect_cmd import inspect
from engine.cli.run_cmd import run
from engine.quantize_cli import compare, export, quantize


@click.group()
def model() -> None:
    """Import, inspect, quantize and run models on this machine."""


for _command in (import_, inspect, run, quantize, compare, export):
    model.add_command(_command)

__all__ = ["model"]
