"""A fake ModelScope: the listing `/api/v1/models/{repo}/repo/files?Revision=..&Recursive=true` in
modelscope.cn's envelope (`Code`, `Data.Files` with `Path`, `Type`, `Size`, `Sha256`, `IsLFS`,
`Revision`..., `Message`, `RequestId`, `Success`; only the top level, directories as `tree` entries,
unless `Recursive`), and the file download `/api/v1/models/{repo}/repo?Revision=..&FilePath=..`,
which hands LFS files to a CDN path. Files are real files on disk.

The branch has a history: `push` moves it to a new commit (right after the next listing with
`push_after_listing`, as an upload landing during a download would), and both calls answer for the
branch (its head) or any of its commits by id. Each listed file's `Revision` is the commit listed.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from fakes.serving import Faults, Stats, serve_file

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
"""The branch's first commit."""


@dataclass
class ModelScopeFile:
    """One file of the repository; ModelScope publishes the sha256 of every file, LFS or not."""

    path: Path
    lfs: bool = True


@dataclass
class FakeModelScope:
    """One repository and one branch, `files` (keyed by the path ModelScope publishes) at its head."""

    repo: str
    files: dict[str, ModelScopeFile]
    branch: str = "master"
    commit: str = COMMIT
    """The branch's head."""
    token: str | None = None
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    listings: list[dict[str, str]] = field(default_factory=list)
    """The query of every listing request."""
    downloads: list[tuple[str, str]] = field(default_factory=list)
    """The Revision and FilePath of every file request."""
    history: dict[str, dict[str, ModelScopeFile]] = field(default_factory=dict)
    """The files of the branch's earlier commits, by commit id."""
    push_after_listing: tuple[str, dict[str, ModelScopeFile]] | None = None
    """A commit (id, files) pushed to the branch once the next listing is answered."""
    _digests: dict[Path, str] = field(default_factory=dict)

    def digest(self, name: str) -> str:
        """The sha256 of a file at the branch's head."""
        return self._digest(self.files[name])

    def _digest(self, file: ModelScopeFile) -> str:
        if file.path not in self._digests:
            self._digests[file.path] = hashlib.sha256(file.path.read_bytes()).hexdigest()
        return self._digests[file.path]

    def push(self, commit: str, files: dict[str, ModelScopeFile]) -> None:
        """Move the branch to a new commit with these files."""
        self.history[self.commit] = self.files
        self.commit, self.files = commit, files

    def _at(self, revision: str) -> tuple[str, dict[str, ModelScopeFile]] | None:
        """The commit and files a revision names: the branch's head, or a commit by its id."""
        if revision in (self.branch, self.commit):
            return self.commit, self.files
        if revision in self.history:
            return revision, self.history[revision]
        return None

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
        if self._at(request.query.get("Revision", self.branch)) is None:
            return _error(404, f"Revision {request.query['Revision']} not found")
        return None

    def _entry(self, name: str, file: ModelScopeFile, *, commit: str) -> dict[str, object]:
        return {
            "CommitId": commit,
            "CommitMessage": "upload model",
            "CommittedDate": 1718000000 + len(self.history),
            "Committer": {"Name": "acme", "Email": "acme@example.com"},
            "IsLFS": file.lfs,
            "Mode": "100644",
            "Name": name.rsplit("/", 1)[-1],
            "Path": name,
            "Revision": commit,
            "Sha256": self._digest(file),
            "Size": file.path.stat().st_size,
            "Type": "blob",
        }

    def _entries(self, revision: str, *, recursive: bool) -> list[dict[str, object]]:
        at = self._at(revision)
        assert at is not None  # refused before
        commit, files = at
        directories = sorted(
            {"/".join(name.split("/")[:depth]) for name in files for depth in range(1, name.count("/") + 1)}
        )
        trees: list[dict[str, object]] = [
            {"Name": d.rsplit("/", 1)[-1], "Path": d, "Type": "tree", "Size": 0, "Mode": "40000"}
            for d in directories
        ]
        blobs = [self._entry(name, file, commit=commit) for name, file in files.items()]
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
        entries = self._entries(request.query.get("Revision", self.branch), recursive=recursive)
        data = {"Files": entries, "LatestCommitter": {"Name": "acme"}}
        if self.push_after_listing is not None:
            self.push(*self.push_after_listing)
            self.push_after_listing = None
        return web.json_response(
            {"Code": 200, "Data": data, "Message": "success", "RequestId": _request_id(), "Success": True}
        )

    async def _file(self, request: web.Request) -> web.StreamResponse:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        revision, name = request.query.get("Revision", self.branch), request.query.get("FilePath", "")
        self.downloads.append((revision, name))
        at = self._at(revision)
        assert at is not None  # refused before
        file = at[1].get(name)
        if file is None:
            return _error(404, f"File {name} not found")
        if file.lfs:
            raise web.HTTPFound(f"/cdn/{self._digest(file)}")
        return await serve_file(request, key=name, path=file.path, faults=self.faults, stats=self.stats)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        """LFS content by its sha256, of any commit."""
        by_digest = {
            self._digest(file): (name, file)
            for files in [*self.history.values(), self.files]
            for name, file in files.items()
            if file.lfs
        }
        found = by_digest.get(request.match_info["sha256"])
        if found is None:
            return web.Response(status=404)
        name, file = found
        return await serve_file(request, key=name, path=file.path, faults=self.faults, stats=self.stats)


def _request_id() -> str:
    return str(uuid.uuid4())


def _error(status: int, message: str) -> web.Response:
    body = {"Code": status, "Message": message, "RequestId": _request_id(), "Success": False}
    return web.json_response(body, status=status)
