"""Model references, ``name[:version][@variant]``, and the name rules that keep them safe as paths.

    style            -> latest version, fp32 (the float master)
    style:2          -> version 2, fp32
    style:latest@lut4
    style:2@lut4

Names and variants are single path components in the store's directory
layout, so they are checked here once: 1–64 characters from
``[A-Za-z0-9._-]``, not starting with a dot (which rules out ``.`` and
``..``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from store.exceptions import ModelRefError

NAME_PATTERN = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}"
_NAME = re.compile(NAME_PATTERN)
LATEST = "latest"
DEFAULT_VARIANT = "fp32"


def check_name(value: str, what: str = "model name") -> str:
    """``value`` unchanged if it is a safe name, else :class:`ModelRefError`."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ModelRefError(f"{what} {value!r} is not allowed: use 1-64 characters from A-Z a-z 0-9 . _ -, "
                       "not starting with a dot")
    return value


def parse_version(text: str | int | None) -> int | None:
    """``None`` for ``latest`` (or nothing), else a positive integer."""
    if text is None or text == LATEST:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        number = text
    elif isinstance(text, str) and text.isdigit() and len(text) <= 9:
        number = int(text)
    else:
        raise ModelRefError(f"model version {text!r} is not allowed: use a positive integer or 'latest'")
    if number < 1:
        raise ModelRefError(f"model version {text!r} is not allowed: versions start at 1")
    return number


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None  # None: the latest version
    variant: str = DEFAULT_VARIANT

    def __post_init__(self) -> None:
        check_name(self.name)
        check_name(self.variant, "variant")
        parse_version(self.version)

    @property
    def version_text(self) -> str:
        return LATEST if self.version is None else str(self.version)

    @property
    def pinned(self) -> bool:
        return self.version is not None

    def with_version(self, version: int) -> ModelRef:
        return ModelRef(self.name, version, self.variant)

    def __str__(self) -> str:
        return f"{self.name}:{self.version_text}@{self.variant}"


def parse_ref(text: str) -> ModelRef:
    """Parse ``name[:version][@variant]``; :class:`ModelRefError` names the part that is wrong."""
    if not isinstance(text, str) or not text:
        raise ModelRefError("empty model reference: use name[:version][@variant], e.g. style:2@lut4")
    rest, at, variant = text.partition("@")
    name, colon, version = rest.partition(":")
    if at and not variant:
        raise ModelRefError(f"model reference {text!r}: nothing after '@'; name a variant such as fp16 or lut4")
    if colon and not version:
        raise ModelRefError(f"model reference {text!r}: nothing after ':'; give a version number or 'latest'")
    try:
        return ModelRef(name, parse_version(version or None), variant or DEFAULT_VARIANT)
    except ModelRefError as exc:
        raise ModelRefError(f"model reference {text!r}: {exc}") from None


def looks_like_ref(text: str) -> bool:
    """True when ``text`` parses as a store reference rather than, say, a file path."""
    try:
        parse_ref(text)
    except ModelRefError:
        return False
    return not text.endswith(".corral")
