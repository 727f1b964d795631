"""The store's errors, one type per concept; each message names the model or file and says what to do."""

from __future__ import annotations


class ModelRefError(ValueError):
    """A model reference (``name[:version][@variant]`` or a package path) or name that cannot be used."""


class UnknownVariantError(ModelRefError):
    """A variant name that is neither built in nor a configured recipe."""


class NotFoundError(LookupError):
    """No such model or version; the message says what exists."""


class MissingCalibrationError(NotFoundError):
    """An ``int8`` variant was asked of a version that has no calibration set to make it from."""


class VersionExistsError(ValueError):
    """Versions are immutable: a second upload to the same version is refused."""


class ConfigError(ValueError):
    """A store setting (token file, recipes, limits, environment value) that cannot be used."""


class StoreError(RuntimeError):
    """A request the store answered with an error; the message carries its explanation."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StoreUnavailableError(StoreError):
    """The store could not be reached (or kept failing) within the retry limit."""


class CorruptDownloadError(StoreError):
    """A downloaded package did not match the sha256 in its manifest, on every attempt."""


__all__ = ["ConfigError", "CorruptDownloadError", "MissingCalibrationError", "ModelRefError", "NotFoundError",
           "StoreError",
           "StoreUnavailableError", "UnknownVariantError", "VersionExistsError"]
