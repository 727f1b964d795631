"""Where a process finds its models: the store's settings, read from the environment in this one place.

Library code takes a :class:`StoreSettings` (or the values in it) as a
parameter; only the command-line entry points call :meth:`StoreSettings.from_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from store.exceptions import ConfigError

# The environment variables this package reads (see the README's configuration table).
ENV_URL = "CORRAL_STORE_URL"
ENV_TOKEN = "CORRAL_STORE_TOKEN"
ENV_ROOT = "CORRAL_STORE_ROOT"
ENV_CACHE_DIR = "CORRAL_CACHE_DIR"
ENV_WAIT = "CORRAL_STORE_WAIT_S"

DEFAULT_WAIT_S = 60.0


def default_store_root(environ: Mapping[str, str] | None = None) -> Path:
    """The embedded local store that ``corral run`` uses without a store service:
    ``$XDG_DATA_HOME/corral/store`` (``~/.local/share/corral/store``)."""
    base = (environ or {}).get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base, "corral", "store")


def default_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where a worker keeps downloaded packages and compiled models: ``$XDG_CACHE_HOME/corral``
    (``~/.cache/corral``)."""
    base = (environ or {}).get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base, "corral")


@dataclass(frozen=True)
class StoreSettings:
    """``url`` set: models come from that store service (``token`` for protected reads); else from the
    local directory ``root``. ``wait_s`` is how long a fetch keeps retrying a store that is down."""

    url: str | None = None
    token: str | None = None
    root: Path = field(default_factory=default_store_root)
    cache_dir: Path = field(default_factory=default_cache_root)
    wait_s: float = DEFAULT_WAIT_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())
        if self.wait_s < 0:
            raise ConfigError(f"store wait {self.wait_s} s: give zero or more seconds ({ENV_WAIT})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> StoreSettings:
        """Settings from ``CORRAL_STORE_URL``, ``_TOKEN``, ``_ROOT``, ``CORRAL_CACHE_DIR`` and
        ``CORRAL_STORE_WAIT_S``; ``overrides`` that are not None win (command-line options)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {"root": default_store_root(env), "cache_dir": default_cache_root(env)}
        if env.get(ENV_URL):
            values["url"] = env[ENV_URL]
        if env.get(ENV_TOKEN):
            values["token"] = env[ENV_TOKEN]
        if env.get(ENV_ROOT):
            values["root"] = Path(env[ENV_ROOT])
        if env.get(ENV_CACHE_DIR):
            values["cache_dir"] = Path(env[ENV_CACHE_DIR])
        if env.get(ENV_WAIT):
            try:
                values["wait_s"] = float(env[ENV_WAIT])
            except ValueError:
                raise ConfigError(f"{ENV_WAIT}={env[ENV_WAIT]!r}: give a number of seconds") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> StoreSettings:
        """A copy with ``changes`` that are not None applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
