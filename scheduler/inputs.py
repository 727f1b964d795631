"""Turning INPUTS (files, directories, globs, list files) into job items, refusing plain non-images early.

Each item gets a *name*: its path relative to the directory or glob base it
came from (just the file name for files and list entries). Outputs are
written under that name, so a directory tree maps to the same tree of
results, and a redelivered item rewrites the same file.

Before anything is queued, each file's first bytes are checked against the
signatures of the formats the workers decode (PNG, JPEG, GIF, BMP, TIFF,
WebP): missing, empty and non-image files are reported and left out. Damage
deeper in a file (truncation, corrupt data) is found by the worker that
decodes it and reported as that item's failure.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# (offset, magic bytes, format)
SIGNATURES: list[tuple[int, bytes, str]] = [
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (8, b"WEBP", "WebP"),  # after "RIFF" + 4-byte size
]
HEADER_BYTES = 16


@dataclass(frozen=True)
class InputItem:
    path: Path  # absolute
    name: str  # relative, POSIX separators; names the outputs


@dataclass(frozen=True)
class Rejected:
    file: str
    reason: str


def sniff_format(header: bytes) -> str | None:
    """The image format named by a file's first bytes, or None."""
    for offset, magic, fmt in SIGNATURES:
        if header[offset:offset + len(magic)] == magic:
            if fmt == "WebP" and not header.startswith(b"RIFF"):
                continue
            return fmt
    return None


def check_file(path: Path) -> str | None:
    """Why ``path`` is plainly not an image we can queue, or None if its signature is fine."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(HEADER_BYTES)
    except FileNotFoundError:
        return "no such file; check the path"
    except IsADirectoryError:
        return "is a directory"
    except OSError as exc:
        return f"cannot read the file ({exc.strerror}); check its permissions"
    if not header:
        return "empty file (0 bytes); copy the image again"
    if sniff_format(header) is None:
        return ("not an image: its first bytes match none of PNG, JPEG, GIF, BMP, TIFF, WebP "
                f"(starts with {header[:8]!r}); convert it or leave it out")
    return None


def is_list_file(spec: str) -> bool:
    return spec.startswith("@") or spec.lower().endswith(".txt")


def _list_entries(spec: str) -> tuple[Path, list[str]]:
    path = Path(spec.removeprefix("@")).expanduser()
    lines = path.read_text().splitlines()
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return path.parent, entries


def _expand(spec: str) -> Iterator[tuple[Path, str] | Rejected]:
    """(path, name) pairs for one INPUT, or rejections for parts that cannot be used."""
    if is_list_file(spec):
        try:
            base, entries = _list_entries(spec)
        except OSError as exc:
            yield Rejected(spec, f"cannot read the list file ({exc.strerror or exc})")
            return
        for entry in entries:
            p = Path(entry).expanduser()
            p = p if p.is_absolute() else base / p
            yield p, p.name
        return
    path = Path(spec).expanduser()
    if glob.has_magic(spec):
        base = _glob_base(spec)
        matches = sorted(glob.glob(spec, recursive=True))
        if not matches:
            yield Rejected(spec, "the pattern matches no files")
        for match in matches:
            m = Path(match)
            if m.is_file():
                yield m, _relative(m, base)
        return
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for fname in sorted(files):
                if not fname.startswith("."):
                    p = Path(root, fname)
                    yield p, _relative(p, path)
        return
    yield path, path.name


def _glob_base(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _relative(path: Path, base: Path) -> str:
    try:
        return PurePosixPath(path.relative_to(base)).as_posix()
    except ValueError:
        return path.name


def iter_inputs(specs: Iterable[str | os.PathLike[str]], check: bool = True) -> Iterator[InputItem | Rejected]:
    """Items in a stable order (sorted within directories), each file once, names made unique."""
    seen_paths: set[Path] = set()
    names: set[str] = set()
    for spec in specs:
        for entry in _expand(os.fspath(spec)):
            if isinstance(entry, Rejected):
                yield entry
                continue
            path, name = entry
            path = path.absolute()
            if path in seen_paths:
                continue
            seen_paths.add(path)
            reason = check_file(path) if check else None
            if reason:
                yield Rejected(str(path), reason)
                continue
            yield InputItem(path, _unique(name, names))


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``stem~2.ext``, ``stem~3.ext``… when another input already has its stem.

    Compared without the extension, since outputs replace it (``a.jpg`` and
    ``a.png`` would both write ``a.png``).
    """
    path = PurePosixPath(name)
    candidate, n = path, 1
    while str(candidate.with_suffix("")).lower() in taken:
        n += 1
        candidate = path.with_name(f"{path.stem}~{n}{path.suffix}")
    taken.add(str(candidate.with_suffix("")).lower())
    return str(candidate)


def scan_inputs(specs: Iterable[str | os.PathLike[str]], check: bool = True) -> tuple[list[InputItem], list[Rejected]]:
    items: list[InputItem] = []
    rejected: list[Rejected] = []
    for entry in iter_inputs(specs, check):
        if isinstance(entry, Rejected):
            rejected.append(entry)
        else:
            items.append(entry)
    return items, rejected
