"""The scheduler's errors, one type per concept; each message says what to do.

A bad model reference is the store's :class:`store.exceptions.ModelRefError`
(re-exported here): a reference is one concept whether it names a store
model or a package file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from store.exceptions import ModelRefError

if TYPE_CHECKING:
    from scheduler.inputs import Rejected


class RoutingError(ValueError):
    """A device request no queue serves."""


class NoImagesError(ValueError):
    """Nothing left to queue after scanning; ``rejected`` says why each input was refused."""

    def __init__(self, rejected: list[Rejected]) -> None:
        self.rejected = rejected
        detail = "".join(f"\n  {r.file}: {r.reason}" for r in rejected[:20])
        super().__init__(f"no images to process{':' if rejected else ' (the inputs named no files)'}{detail}")


class JobNotFoundError(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r} in this Redis; `corral jobs` lists the jobs it holds")


class JobTimeoutError(TimeoutError):
    """A job did not end within the time a caller was willing to wait (the job itself goes on)."""


class SettingsError(ValueError):
    """An environment value that cannot be used; the message names the variable."""


class EmbeddedError(RuntimeError):
    """The embedded redis-server or worker of `corral run` / `corral demo` could not start."""


__all__ = ["EmbeddedError", "JobNotFoundError", "JobTimeoutError", "ModelRefError", "NoImagesError",
           "RoutingError", "SettingsError"]
