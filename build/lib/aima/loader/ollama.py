"""Ollama models from an OCI-style registry (registry.ollama.ai by default).

`GET {endpoint}/v2/{name}/manifests/{tag}` (Accept: the Docker manifest v2 media type) answers a
config and layers, each with a `digest` (sha256:...) and a `size`; blobs come from
`{endpoint}/v2/{name}/blobs/{digest}`. Files land in Ollama's own layout (`blobs/sha256-<hex>` and
`manifests/registry.ollama.ai/<name>/<tag>`), so the directory can serve as OLLAMA_MODELS as is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from aima.loader import client as http
from aima.loader.errors import SourceError
from aima.loader.plan import Listing, RemoteFile
from aima.loader.source import OllamaSource

__all__ = ["DEFAULT_ENDPOINT", "MANIFEST_MEDIA_TYPE", "files_from_manifest", "list_files"]

DEFAULT_ENDPOINT = "https://registry.ollama.ai"
MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
# Ollama names models by the registry that serves them; a mirror keeps the canonical name.
_REGISTRY_HOST = "registry.ollama.ai"


def files_from_manifest(
    manifest: Mapping[str, Any], *, endpoint: str, source: OllamaSource
) -> tuple[RemoteFile, ...]:
    """Pure: one file per distinct blob (config first, then layers) of a registry manifest."""
    layers = [manifest.get("config"), *(manifest.get("layers") or [])]
    files: dict[str, RemoteFile] = {}
    for layer in layers:
        if not isinstance(layer, dict):
            raise SourceError(f"The registry's manifest for {source.name}:{source.tag} has a malformed layer")
        algorithm, _, hex_digest = str(layer.get("digest", "")).partition(":")
        if algorithm != "sha256" or len(hex_digest) != 64:
            raise SourceError(
                f"The registry's manifest for {source.name}:{source.tag} has a non-sha256 digest"
            )
        files.setdefault(
            hex_digest,
            RemoteFile(
                path=f"blobs/sha256-{hex_digest}",
                url=f"{endpoint}/v2/{source.name}/blobs/sha256:{hex_digest}",
                size=layer.get("size"),
                sha256=hex_digest,
                media_type=layer.get("mediaType"),
            ),
        )
    return tuple(files.values())


async def list_files(
    client: http.Client, source: OllamaSource, *, uri: str, endpoint: str, headers: Mapping[str, str]
) -> Listing:
    """Fetch the manifest of `name:tag` and list its blobs."""
    body = await http.get_bytes(
        client,
        f"{endpoint}/v2/{source.name}/manifests/{source.tag}",
        headers=dict(headers, Accept=MANIFEST_MEDIA_TYPE),
        what=f"Ollama model {source.name}:{source.tag}",
    )
    try:
        manifest = json.loads(body)
    except ValueError as error:
        raise SourceError(f"The registry's manifest for {source.name}:{source.tag} is not JSON") from error
    files = files_from_manifest(manifest, endpoint=endpoint, source=source)
    return Listing(
        source=uri,
        revision=f"sha256:{hashlib.sha256(body).hexdigest()}",
        files=files,
        headers=headers,
        inline_files={f"manifests/{_REGISTRY_HOST}/{source.name}/{source.tag}": body},
    )
