"""Errors raised by ``zoo.data``."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file or argument that cannot be used (malformed file, bad split, ...)."""


class UnknownDatasetError(DatasetError, KeyError):
    """A dataset name that is neither a zoo dataset nor in the TFDS catalog."""

    def __str__(self) -> str:
        return str(self.args[0])


class DatasetNotAvailableError(DatasetError):
    """A known dataset whose data is not on this machine and cannot be downloaded now."""
