"""The loader's errors: each carries a one-line reason a person can act on.

The CLI prints `str(error)` and exits non-zero; the Model controller copies the same line into the
Model's status, so messages name the file and the number that was wrong, and never a token.
"""

from __future__ import annotations


class LoaderError(Exception):
    """Any failure of the loader that has a reason in words."""


class SourceError(LoaderError):
    """The source URI is malformed, or the source refused or failed to list the model."""


class UnsafePathError(LoaderError):
    """A file name would escape the model directory (absolute, `..`, backslash, NUL, symlink)."""


class DiskFullError(LoaderError):
    """The destination has less free space than the files still to download need."""


class LockHeldError(LoaderError):
    """Another loader holds the model directory's lock."""


class TransferError(LoaderError):
    """A file could not be downloaded after the allowed retries."""


class VerificationError(LoaderError):
    """A file's size or sha256 differs from what the source publishes or the manifest records."""
