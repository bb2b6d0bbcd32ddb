"""Which source module lists a source, and with which endpoint and credentials."""

from __future__ import annotations

from aima.loader import client as http
from aima.loader import hub, modelscope, ollama, s3, web
from aima.loader.errors import SourceError
from aima.loader.plan import Listing
from aima.loader.sigv4 import Credentials
from aima.loader.source import HfSource, HttpSource, ModelScopeSource, OllamaSource, S3Source, Source

__all__ = ["auth_headers", "fetch"]


def auth_headers(token: str | None) -> dict[str, str]:
    """The Authorization header for a token (Bearer, as the Hub, ModelScope and registries take it)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


async def fetch(
    client: http.Client,
    source: Source,
    *,
    uri: str,
    endpoint: str | None,
    token: str | None,
    region: str | None = None,
    aws_credentials: Credentials | None = None,
) -> Listing:
    """List the files of `source`; `endpoint` replaces the source's default host (a mirror).

    S3 sources sign with `aws_credentials` for `region` (anonymous without credentials); the
    others send `token` as a Bearer token.
    """
    headers = auth_headers(token)
    match source:
        case HfSource():
            base = (endpoint or hub.DEFAULT_ENDPOINT).rstrip("/")
            return await hub.list_files(client, source, uri=uri, endpoint=base, headers=headers)
        case ModelScopeSource():
            base = (endpoint or modelscope.DEFAULT_ENDPOINT).rstrip("/")
            return await modelscope.list_files(client, source, uri=uri, endpoint=base, headers=headers)
        case OllamaSource():
            base = (endpoint or ollama.DEFAULT_ENDPOINT).rstrip("/")
            return await ollama.list_files(client, source, uri=uri, endpoint=base, headers=headers)
        case HttpSource():
            return await web.list_files(client, source, uri=uri, headers=headers)
        case S3Source():
            return await s3.list_files(
                client,
                source,
                uri=uri,
                endpoint=(endpoint or s3.DEFAULT_ENDPOINT).rstrip("/"),
                region=region or s3.DEFAULT_REGION,
                credentials=aws_credentials,
            )
        case _:
            raise SourceError(f"{type(source).__name__} has nothing to download; it is verified in place")
