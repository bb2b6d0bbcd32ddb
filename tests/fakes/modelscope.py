"""A fake ModelScope: the listing `/api/v1/models/{repo}/repo/files?Revision=..&Recursive=true` in
modelscope.cn's envelope (`Code`, `Data.Files` with `Path`, `Type`, `Size`, `Sha256`, `IsLFS`,
`Revision`..., `Message`, `RequestId`, `Success`; only the top level, directories as `tree` entries,
unless `Recursive`), and the file download `/api/v1/models/{repo}/repo?Revision=..&FilePath=..`,
which hands LFS files to a CDN path. Files are real files on disk.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from fakes.serving import Faults, Stats, serve_file

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@dataclass
class ModelScopeFile:
    """One file of the repository; ModelScope publishes the sha256 of every file, LFS or not."""

    path: Path
    lfs: bool = True


@dataclass
class FakeModelScope:
    """One repository at one branch, `files` keyed by the path ModelScope publishes."""

    repo: str
    files: dict[str, ModelScopeFile]
    branch: str = "master"
    token: str | None = None
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    listings: list[dict[str, str]] = field(default_factory=list)
    """The query of every listing request."""
    _digests: dict[str, str] = field(default_factory=dict)

    def digest(self, name: str) -> str:
        if name not in self._digests:
            self._digests[name] = hashlib.sha256(self.files[name].path.read_bytes()).hexdigest()
        return self._digests[name]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/models/{org}/{name}/repo/files", self._listing)
        app.router.add_route("*", "/api/v1/models/{org}/{name}/repo", self._file)
        app.router.add_route("*", "/cdn/{sha256}", self._cdn)
        return app

    def _refusal(self, request: web.Request) -> web.Response | None:
        """ModelScope's error envelope for an unknown repository or revision, or a wrong token."""
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "Unauthorized, please log in")
        if f"{request.match_info['org']}/{request.match_info['name']}" != self.repo:
            return _error(404, f"Model {request.match_info['org']}/{request.match_info['name']} not found")
        if request.query.get("Revision", self.branch) not in (self.branch, COMMIT):
            return _error(404, f"Revision {request.query['Revision']} not found")
        return None

    def _entry(self, name: str) -> dict[str, object]:
        return {
            "CommitId": COMMIT,
            "CommitMessage": "upload model",
            "CommittedDate": 1718000000,
            "Committer": {"Name": "acme", "Email": "acme@example.com"},
            "IsLFS": self.files[name].lfs,
            "Mode": "100644",
            "Name": name.rsplit("/", 1)[-1],
            "Path": name,
            "Revision": COMMIT,
            "Sha256": self.digest(name),
            "Size": self.files[name].path.stat().st_size,
            "Type": "blob",
        }

    def _entries(self, *, recursive: bool) -> list[dict[str, object]]:
        directories = sorted(
            {
                "/".join(name.split("/")[:depth])
                for name in self.files
                for depth in range(1, name.count("/") + 1)
            }
        )
        trees: list[dict[str, object]] = [
            {"Name": d.rsplit("/", 1)[-1], "Path": d, "Type": "tree", "Size": 0, "Mode": "40000"}
            for d in directories
        ]
        blobs = [self._entry(name) for name in self.files]
        entries = trees + blobs
        if recursive:
            return entries
        return [entry for entry in entries if "/" not in str(entry["Path"])]

    async def _listing(self, request: web.Request) -> web.Response:
        self.listings.append(dict(request.query))
        refused = self._refusal(request)
        if refused is not None:
            return refused
        recursive = request.query.get("Recursive", "false").lower() == "true"
        data = {"Files": self._entries(recursive=recursive), "LatestCommitter": {"Name": "acme"}}
        return web.json_response(
            {"Code": 200, "Data": data, "Message": "success", "RequestId": _request_id(), "Success": True}
        )

    async def _file(self, request: web.Request) -> web.StreamResponse:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        name = request.query.get("FilePath", "")
        if name not in self.files:
            return _error(404, f"File {name} not found")
        if self.files[name].lfs:
            raise web.HTTPFound(f"/cdn/{self.digest(name)}")
        return await serve_file(
            request, key=name, path=self.files[name].path, faults=self.faults, stats=self.stats
        )

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        by_digest = {self.digest(name): name for name in self.files if self.files[name].lfs}
        name = by_digest.get(request.match_info["sha256"])
        if name is None:
            return web.Response(status=404)
        return await serve_file(
            request, key=name, path=self.files[name].path, faults=self.faults, stats=self.stats
        )


def _request_id() -> str:
    return str(uuid.uuid4())


def _error(status: int, message: str) -> web.Response:
    body = {"Code": status, "Message": message, "RequestId": _request_id(), "Success": False}
    return web.json_response(body, status=status)
