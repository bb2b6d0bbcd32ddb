"""A fake Hugging Face Hub: `/api/models/{repo}/revision/{rev}` (with `?blobs=true` sizes and LFS
sha256) and `/{repo}/resolve/{rev}/{path}`, which redirects LFS files to a CDN path the way the Hub
does. Files are real files on disk; names are taken verbatim, so a test can publish `../evil`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from fakes.serving import Faults, Stats, serve_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    """One file of the repository; LFS files publish their sha256."""

    path: Path
    lfs: bool = True


@dataclass
class FakeHub:
    """One repository, `files` keyed by the name the Hub publishes."""

    repo: str
    files: dict[str, HubFile]
    token: str | None = None
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    _digests: dict[str, str] = field(default_factory=dict)

    def digest(self, name: str) -> str:
        if name not in self._digests:
            self._digests[name] = hashlib.sha256(self.files[name].path.read_bytes()).hexdigest()
        return self._digests[name]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/models/{org}/{name}/revision/{revision}", self._revision)
        app.router.add_route("*", "/{org}/{name}/resolve/{revision}/{path:.+}", self._resolve)
        app.router.add_route("*", "/cdn/{sha256}", self._cdn)
        return app

    def _authorised(self, request: web.Request) -> bool:
        return self.token is None or request.headers.get("Authorization") == f"Bearer {self.token}"

    def _sibling(self, name: str) -> dict[str, object]:
        entry: dict[str, object] = {
            "rfilename": name,
            "size": self.files[name].path.stat().st_size,
            "blobId": "0" * 40,
        }
        if self.files[name].lfs:
            size = self.files[name].path.stat().st_size
            entry["lfs"] = {"sha256": self.digest(name), "size": size, "pointerSize": 134}
        return entry

    async def _revision(self, request: web.Request) -> web.Response:
        if f"{request.match_info['org']}/{request.match_info['name']}" != self.repo:
            return web.json_response({"error": "Repository not found"}, status=404)
        if not self._authorised(request):
            return web.json_response({"error": "Invalid credentials"}, status=401)
        siblings = (
            [self._sibling(name) for name in self.files]
            if request.query.get("blobs") == "true"
            else [{"rfilename": n} for n in self.files]
        )
        return web.json_response({"id": self.repo, "sha": COMMIT, "siblings": siblings})

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return web.json_response({"error": "Invalid credentials"}, status=401)
        name = request.match_info["path"]
        if name not in self.files or request.match_info["revision"] != COMMIT:
            return web.json_response({"error": "Entry not found"}, status=404)
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


def hubs_app(hubs: list[FakeHub]) -> web.Application:
    """One server for several repositories, each answered by its own FakeHub."""
    by_repo = {hub.repo: hub for hub in hubs}

    def hub_of(request: web.Request) -> FakeHub:
        found = by_repo.get(f"{request.match_info['org']}/{request.match_info['name']}")
        if found is None:
            raise web.HTTPNotFound(text='{"error": "Repository not found"}', content_type="application/json")
        return found

    async def revision(request: web.Request) -> web.StreamResponse:
        return await hub_of(request)._revision(request)

    async def resolve(request: web.Request) -> web.StreamResponse:
        return await hub_of(request)._resolve(request)

    async def cdn(request: web.Request) -> web.StreamResponse:
        for hub in hubs:
            if request.match_info["sha256"] in {hub.digest(n) for n in hub.files if hub.files[n].lfs}:
                return await hub._cdn(request)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/api/models/{org}/{name}/revision/{revision}", revision)
    app.router.add_route("*", "/{org}/{name}/resolve/{revision}/{path:.+}", resolve)
    app.router.add_route("*", "/cdn/{sha256}", cdn)
    return app


def main() -> None:
    """Serve every file under each folder as one repository, for a hub that runs as a pod:
    ``python -m fakes.hub REPO=FOLDER [REPO=FOLDER ...] --port 8080 --delay-per-chunk 0.1``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("repositories", nargs="+", metavar="REPO=FOLDER")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--delay-per-chunk", type=float, default=0.0)
    args = parser.parse_args()
    hubs = []
    for pair in args.repositories:
        repo, _, folder = pair.partition("=")
        files = {
            path.relative_to(folder).as_posix(): HubFile(path, lfs=path.suffix != ".json")
            for path in sorted(Path(folder).rglob("*"))
            if path.is_file()
        }
        hubs.append(FakeHub(repo, files, faults=Faults(delay_per_chunk=args.delay_per_chunk)))
    web.run_app(hubs_app(hubs), host="0.0.0.0", port=args.port, print=None)  # a pod's port: every address


if __name__ == "__main__":
    main()
