"""The ``corral`` command. Subcommands live beside the code they drive and are imported on first use.

Every option can also be set through the environment: ``CORRAL_<COMMAND>_<OPTION>``
(for example ``CORRAL_MODEL_RUN_BACKEND=numpy``), and the shared settings
through their own names (``CORRAL_REDIS_URL``, ``CORRAL_STORE_URL``,
``CORRAL_NUM_THREADS`` …; the README's configuration table lists them all).
Each package reads its environment in its ``settings`` module; this group
applies the process-wide ones.
"""

from __future__ import annotations

import importlib

import click

from scheduler.settings import ENV_NUM_THREADS

# command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "model": "engine.cli:model",
    "demo": "scheduler.demo:demo",
    "submit": "scheduler.commands:submit",
    "status": "scheduler.commands:status",
    "wait": "scheduler.commands:wait",
    "cancel": "scheduler.commands:cancel",
    "results": "scheduler.commands:results",
    "jobs": "scheduler.commands:jobs",
    "workers": "scheduler.commands:workers",
    "run": "scheduler.commands:run",
    "worker": "workers.cli:worker",
    "store": "store.cli:store",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"auto_envvar_prefix": "CORRAL", "help_option_names": ["-h", "--help"]})
@click.version_option(package_name="corral")
@click.option("--threads", type=click.IntRange(1), envvar=ENV_NUM_THREADS, default=None,
              help=f"threads of the numpy engine's kernels [env {ENV_NUM_THREADS}; default: the usable CPUs]")
def main(threads: int | None) -> None:
    """corral: run image models over whole image sets on CPU and GPU workers."""
    if threads is not None:
        from engine.ops.threads import set_num_threads

        set_num_threads(threads)
