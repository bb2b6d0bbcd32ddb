"""A fake Ollama registry: `/v2/{name}/manifests/{tag}` (Docker manifest v2, insisting on the Accept
header as registries do) and `/v2/{name}/blobs/sha256:{hex}`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from fakes.serving import Faults, Stats, serve_file

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass
class FakeOllama:
    """One model `name:tag` with a config blob and layers (media type → file)."""

    name: str
    tag: str
    config: Path
    layers: dict[str, Path]
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)

    def blobs(self) -> dict[str, Path]:
        """Blob files by hex digest."""
        return {
            hashlib.sha256(path.read_bytes()).hexdigest(): path
            for path in [self.config, *self.layers.values()]
        }

    def manifest(self) -> bytes:
        def layer(media_type: str, path: Path) -> dict[str, object]:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": path.stat().st_size}

        document = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": layer("application/vnd.docker.container.image.v1+json", self.config),
            "layers": [layer(media_type, path) for media_type, path in self.layers.items()],
        }
        return json.dumps(document).encode()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/{name:.+}/manifests/{tag}", self._manifest)
        app.router.add_get("/v2/{name:.+}/blobs/sha256:{digest}", self._blob)
        return app

    async def _manifest(self, request: web.Request) -> web.Response:
        if (request.match_info["name"], request.match_info["tag"]) != (self.name, self.tag):
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        if MANIFEST_MEDIA_TYPE not in request.headers.get("Accept", ""):
            return web.json_response({"errors": [{"code": "MANIFEST_INVALID"}]}, status=400)
        return web.Response(body=self.manifest(), content_type=MANIFEST_MEDIA_TYPE)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        path = self.blobs().get(request.match_info["digest"])
        if path is None or request.match_info["name"] != self.name:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        key = f"sha256:{request.match_info['digest']}"
        return await serve_file(request, key=key, path=path, faults=self.faults, stats=self.stats)
