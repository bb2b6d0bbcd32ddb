"""Progress and the final manifest reported into a Model's status (`aima loader --model ns/name`).

Patches are coalesced: at most one is in flight, and a newer snapshot replaces one not yet sent,
so a slow API server never queues writes. The Ready report is held back and sent together with the
manifest, so the controller never sees Ready without the files that make it true. The same report
says what the files are (format, and the weights file of GGUF and Ollama models) and clears any
left from an earlier download.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from aima.api.model import ManifestFile, ModelManifest, ModelPhase, ModelProgress
from aima.kube import KubeClient, KubeError, resources
from aima.loader import formats
from aima.loader.manifest import Manifest
from aima.loader.progress import Phase, Progress, ProgressSink

logger = logging.getLogger("aima.loader")
_LISTED_FILES = 256


class ModelStatusSink:
    """A ProgressSink that also patches `status.progress` of one Model."""

    def __init__(self, *, kube: KubeClient, namespace: str, name: str, echo: ProgressSink) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self._echo = echo
        self._latest: Progress | None = None
        self._sending: asyncio.Task[None] | None = None

    def report(self, progress: Progress) -> None:
        """Echo the snapshot and send it to the API server in the background."""
        self._echo.report(progress)
        if progress.phase is Phase.READY:
            return
        self._latest = progress
        if self._sending is None or self._sending.done():
            self._sending = asyncio.get_running_loop().create_task(self._send_latest())

    async def finish(self, manifest: Manifest | None, *, manifest_sha256: str | None) -> None:
        """Wait for pending patches; on success send Ready with the manifest (raises if refused)."""
        if self._sending is not None:
            await self._sending
        if manifest is None or manifest_sha256 is None:
            return
        await self._patch(final_status(manifest, sha256=manifest_sha256))

    async def _send_latest(self) -> None:
        while self._latest is not None:
            progress, self._latest = self._latest, None
            try:
                await self._patch({"progress": progress_status(progress)})
            except (KubeError, OSError) as error:
                # Progress is best effort; only the final report decides the outcome.
                logger.warning(
                    "Could not report progress to Model %s/%s: %s", self._namespace, self._name, error
                )

    async def _patch(self, status: dict[str, Any]) -> None:
        await self._kube.patch_status(
            resources.MODELS, name=self._name, namespace=self._namespace, status=status
        )


def final_status(manifest: Manifest, *, sha256: str) -> dict[str, Any]:
    """The Ready report as a merge patch; None values are nulls that remove what an earlier download
    left (a GGUF weights file must not outlive the GGUF files)."""
    found = formats.detect(manifest.files)
    return {
        "progress": progress_status(_ready(manifest)),
        "manifest": manifest_status(manifest, sha256=sha256),
        "revision": manifest.revision or None,
        "format": found.format.value if found.format else None,
        "weightsFile": found.weights_file,
        "size": f"{manifest.total_bytes}",
        "lastDownloadTime": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def progress_status(progress: Progress) -> dict[str, Any]:
    """The `status.progress` object for one snapshot."""
    percent = progress.bytes_done * 100 // progress.bytes_total if progress.bytes_total else 0
    return ModelProgress(
        phase=ModelPhase(progress.phase.value),
        message=progress.message or None,
        percent=min(percent, 100),
        bytes_done=progress.bytes_done,
        bytes_total=progress.bytes_total or None,
        files_done=progress.files_done,
        files_total=progress.files_total or None,
        bytes_per_second=round(progress.speed) or None,
        eta_seconds=None if progress.eta is None else round(progress.eta),
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


def manifest_status(manifest: Manifest, *, sha256: str) -> dict[str, Any]:
    """The `status.manifest` object: totals, and the largest files with their digests."""
    largest = sorted(manifest.files, key=lambda f: f.size, reverse=True)[:_LISTED_FILES]
    return ModelManifest(
        sha256=sha256,
        file_count=len(manifest.files),
        total_bytes=manifest.total_bytes,
        files=[ManifestFile(path=f.path, size=f.size, sha256=f.sha256) for f in largest],
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


def _ready(manifest: Manifest) -> Progress:
    total = manifest.total_bytes
    count = len(manifest.files)
    return Progress(
        phase=Phase.READY, bytes_done=total, bytes_total=total, files_done=count, files_total=count
    )


__all__ = ["ModelStatusSink", "final_status", "manifest_status", "progress_status"]
