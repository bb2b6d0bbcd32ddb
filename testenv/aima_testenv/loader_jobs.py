"""Stand-in for the kubelet on loader Jobs: kwok "runs" pods without running them, so for `aima dev`
this runs each loader Job's own command line as a local process, with the Job's ServiceAccount
and a local folder in place of the volume. The Model then really goes Downloading -> Ready."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from aima_testenv.cluster import ControlPlane

logger = logging.getLogger("aima_testenv.loader_jobs")
_POLL_SECONDS = 1.0
_RETRY_SECONDS = 2.0


class LocalLoaderJobs:
    """Runs every loader Job once, locally, in a background thread; a context manager.

    A Job that cannot be played (its namespace deleted while it waited, a token that cannot be
    minted, a command that hangs) is logged and left; the thread goes on with the others.
    """

    def __init__(self, plane: ControlPlane, *, volumes: Path) -> None:
        self._plane = plane
        self._volumes = volumes
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aima-loader-jobs", daemon=True)

    def __enter__(self) -> LocalLoaderJobs:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(_POLL_SECONDS):
            listed = self._plane.kubectl(
                "get", "jobs", "-A", "-l", "app.kubernetes.io/component=loader", "-o", "json", check=False
            )
            if listed.returncode != 0:
                continue
            for job in json.loads(listed.stdout)["items"]:
                uid = job["metadata"]["uid"]
                if uid not in self._done:
                    self._done.add(uid)
                    self._run_logged(job)

    def _run_logged(self, job: dict[str, Any]) -> None:
        try:
            self._run(job)
        except Exception:
            meta = job["metadata"]
            logger.exception(
                "Loader Job %s/%s could not be played; leaving it", meta["namespace"], meta["name"]
            )

    def _run(self, job: dict[str, Any]) -> None:
        meta, pod = job["metadata"], job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        args: list[str] = list(container["args"])
        # The volume becomes a folder per namespace and claim; the path inside it stays.
        inside = args[args.index("--dest") + 1].removeprefix(container["volumeMounts"][0]["mountPath"])
        claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
        args[args.index("--dest") + 1] = str(self._volumes / meta["namespace"] / claim / inside.lstrip("/"))
        kubeconfig = self._plane.service_account_kubeconfig(
            namespace=meta["namespace"], name=pod["serviceAccountName"]
        )
        aima = Path(sys.executable).parent / "aima"
        # A failed pod is retried up to the Job's backoffLimit, as the Job controller would.
        for _ in range(1 + int(job["spec"].get("backoffLimit", 6))):
            with (self._plane.workdir / "logs" / f"loader-{meta['name']}.log").open("ab") as log:
                exited = subprocess.run(
                    [str(aima), *args],
                    env=os.environ | {"KUBECONFIG": str(kubeconfig)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=3600,
                    check=False,
                )
            if exited.returncode == 0 or self._stop.wait(_RETRY_SECONDS):
                return
