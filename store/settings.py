"""Where a process finds its models: a store client's settings, read from the environment in this one place.

Library code takes a :class:`StoreClientSettings` (or the values in it) as a
parameter; only the command-line entry points call :meth:`StoreClientSettings.from_env`.
The store service's own settings are :class:`store.config.StoreServerSettings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from store.exceptions import ConfigError

# a path as the command line and callers give it; stored as a Path
StrPath = str | os.PathLike[str]

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
class StoreClientSettings:
    """How a store client (worker, scheduler, CLI) reaches the store and where it caches what it fetched.

    ``url`` set: models come from that store service (``token`` for protected reads); else from the
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
    def from_env(cls, environ: Mapping[str, str] | None = None, *, url: str | None = None,
                 token: str | None = None, root: StrPath | None = None, cache_dir: StrPath | None = None,
                 wait_s: float | None = None) -> StoreClientSettings:
        """Settings from ``CORRAL_STORE_URL``, ``_TOKEN``, ``_ROOT``, ``CORRAL_CACHE_DIR`` and
        ``CORRAL_STORE_WAIT_S``; the keyword arguments that are not None win (command-line options)."""
        env = os.environ if environ is None else environ
        env_wait = DEFAULT_WAIT_S
        if env.get(ENV_WAIT):
            try:
                env_wait = float(env[ENV_WAIT])
            except ValueError:
                raise ConfigError(f"{ENV_WAIT}={env[ENV_WAIT]!r}: give a number of seconds") from None
        env_root = Path(env[ENV_ROOT]) if env.get(ENV_ROOT) else default_store_root(env)
        env_cache = Path(env[ENV_CACHE_DIR]) if env.get(ENV_CACHE_DIR) else default_cache_root(env)
        return cls(url=url if url is not None else env.get(ENV_URL) or None,
                   token=token if token is not None else env.get(ENV_TOKEN) or None,
                   root=Path(root) if root is not None else env_root,
                   cache_dir=Path(cache_dir) if cache_dir is not None else env_cache,
                   wait_s=wait_s if wait_s is not None else env_wait)

    def with_(self, *, url: str | None = None, token: str | None = None, root: StrPath | None = None,
              cache_dir: StrPath | None = None, wait_s: float | None = None) -> StoreClientSettings:
        """A copy with the keyword arguments that are not None applied."""
        return replace(self, url=url if url is not None else self.url,
                       token=token if token is not None else self.token,
                       root=Path(root) if root is not None else self.root,
                       cache_dir=Path(cache_dir) if cache_dir is not None else self.cache_dir,
                       wait_s=wait_s if wait_s is not None else self.wait_s)
