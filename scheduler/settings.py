"""The producer side's settings (Redis, blob expiry, local state), read from the environment in this one place.

Library code (:class:`scheduler.client.Client`, :mod:`scheduler.embedded`)
takes these values as parameters; the command-line entry points build a
:class:`SchedulerSettings` with :meth:`SchedulerSettings.from_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.exceptions import SettingsError
from store.settings import StoreClientSettings

# The environment variables this package reads (see the README's configuration table).
ENV_REDIS_URL = "CORRAL_REDIS_URL"
ENV_BLOB_TTL = "CORRAL_BLOB_TTL"
ENV_STATE_DIR = "CORRAL_STATE_DIR"
ENV_NUM_THREADS = "CORRAL_NUM_THREADS"  # the engine's kernel threads, applied by the root `corral` group

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BLOB_TTL = 24 * 3600  # seconds image and output blobs live in Redis
DEFAULT_VISIBILITY_TIMEOUT = 3600.0  # seconds a chunk may stay unacknowledged with a worker (scheduler.broker)


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/corral`` (``~/.cache/corral`` by default): the embedded Redis's log, worker logs."""
    base = (environ or {}).get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "corral")


@dataclass(frozen=True)
class SchedulerSettings:
    """``redis_url`` None: `corral run` / `corral demo` start an embedded Redis, other commands use
    :data:`DEFAULT_REDIS_URL`. ``store`` is where model references are resolved."""

    redis_url: str | None = None
    blob_ttl: int = DEFAULT_BLOB_TTL
    state_dir: Path = field(default_factory=default_state_dir)
    store: StoreClientSettings = field(default_factory=StoreClientSettings)

    @property
    def fleet_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> SchedulerSettings:
        """From ``CORRAL_REDIS_URL``, ``CORRAL_BLOB_TTL``, ``CORRAL_STATE_DIR`` (else ``XDG_CACHE_HOME``) and
        the store's variables; ``overrides`` that are not None win (command-line options)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {"state_dir": Path(env[ENV_STATE_DIR]).expanduser() if env.get(ENV_STATE_DIR)
                                     else default_state_dir(env),
                                     "store": StoreClientSettings.from_env(env)}
        if env.get(ENV_REDIS_URL):
            values["redis_url"] = env[ENV_REDIS_URL]
        if env.get(ENV_BLOB_TTL):
            try:
                values["blob_ttl"] = int(env[ENV_BLOB_TTL])
            except ValueError:
                raise SettingsError(f"{ENV_BLOB_TTL}={env[ENV_BLOB_TTL]!r}: give a whole number of seconds") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
