"""The model loader: downloads a model from the Hugging Face Hub, ModelScope, an Ollama registry, an
S3 bucket or a URL into a directory, or verifies one already there, for the Model controller's Job
(`aima loader`). It knows nothing of Kubernetes: progress leaves through a ProgressSink.
"""

from aima.loader.engine import Environment, LoadRequest, load
from aima.loader.errors import (
    DiskFullError,
    LoaderError,
    LockHeldError,
    SourceError,
    TransferError,
    UnsafePathError,
    VerificationError,
)
from aima.loader.manifest import Manifest, ManifestFile
from aima.loader.progress import JsonLinesSink, Phase, Progress, ProgressSink, ProgressTracker

__all__ = [
    "DiskFullError",
    "Environment",
    "JsonLinesSink",
    "LoadRequest",
    "LoaderError",
    "LockHeldError",
    "Manifest",
    "ManifestFile",
    "Phase",
    "Progress",
    "ProgressSink",
    "ProgressTracker",
    "SourceError",
    "TransferError",
    "UnsafePathError",
    "VerificationError",
    "load",
]
