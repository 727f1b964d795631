"""The store service's settings (``corral store serve``); its clients' are :mod:`store.settings`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.exceptions import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700
DEFAULT_MAX_UPLOAD = 1 << 30  # 1 GiB; a package is at most 2 GiB (protobuf's limit)


@dataclass
class StoreServerSettings:
    """What one store service serves and to whom: its ``root`` directory, limits and recipes.

    ``token_file`` holds the bearer token uploads need (reads too when ``protect_reads``).

    Without a token file the store serves reads and refuses every upload.
    ``recipes`` maps extra variant names to :class:`engine.quantize.QuantizeOptions`
    keyword arguments, e.g. ``{"small": {"mode": "lut", "bits": 4, "group_size": 8}}``.
    """

    root: Path
    token_file: Path | None = None
    protect_reads: bool = False
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        if self.token_file is not None:
            self.token_file = Path(self.token_file).expanduser()
        if self.max_upload_bytes < 1:
            raise ConfigError(f"max upload size must be positive, got {self.max_upload_bytes}")
        if self.protect_reads and self.token_file is None:
            raise ConfigError("protecting reads needs a token: pass --token-file")

    def token(self) -> str | None:
        """The token from ``token_file`` (surrounding whitespace dropped); None without one."""
        if self.token_file is None:
            return None
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"token file {self.token_file}: cannot read it ({exc.strerror or exc})") from None
        if len(token) < 16:
            raise ConfigError(f"token file {self.token_file}: the token is shorter than 16 characters; "
                              "write a long random one, e.g. `python -c 'import secrets;print(secrets.token_hex())'`")
        return token


def load_recipes(path: str | os.PathLike[str] | None) -> dict[str, dict[str, Any]]:
    """Named variant recipes from a JSON file (an object of name -> quantizer options)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"recipes file {path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"recipes file {path}: expected an object of name -> quantizer options")
    return data
