"""ModelScope's HTTP API.

Listing: `GET {endpoint}/api/v1/models/{repo}/repo/files?Revision=..&Recursive=true` answers
`{"Code": 200, "Data": {"Files": [{"Path", "Type": "blob"|"tree", "Size", "Sha256"}]}}`; a file is
fetched from `{endpoint}/api/v1/models/{repo}/repo?Revision=..&FilePath=..`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aima.loader import client as http
from aima.loader.errors import SourceError
from aima.loader.plan import Listing, RemoteFile
from aima.loader.source import ModelScopeSource

__all__ = ["DEFAULT_ENDPOINT", "files_from_listing", "list_files"]

DEFAULT_ENDPOINT = "https://www.modelscope.cn"


def files_from_listing(
    answer: Mapping[str, Any], *, endpoint: str, source: ModelScopeSource
) -> tuple[RemoteFile, ...]:
    """Pure: the files (not directories) of a ModelScope listing answer."""
    entries = (answer.get("Data") or {}).get("Files")
    if not isinstance(entries, list):
        raise SourceError(
            f"ModelScope's answer for {source.repo} has no file list: {answer.get('Message', '')}"
        )
    files = []
    for entry in entries:
        if entry.get("Type") == "tree":
            continue
        query = urlencode({"Revision": source.revision, "FilePath": entry["Path"]})
        files.append(
            RemoteFile(
                path=entry["Path"],
                url=f"{endpoint}/api/v1/models/{source.repo}/repo?{query}",
                size=entry.get("Size"),
                sha256=entry.get("Sha256") or None,
            )
        )
    return tuple(files)


async def list_files(
    client: http.Client, source: ModelScopeSource, *, uri: str, endpoint: str, headers: Mapping[str, str]
) -> Listing:
    """List the files of a ModelScope repository at a revision."""
    body = await http.get_bytes(
        client,
        f"{endpoint}/api/v1/models/{source.repo}/repo/files",
        headers=headers,
        params={"Revision": source.revision, "Recursive": "true"},
        what=f"ModelScope repository {source.repo}@{source.revision}",
    )
    try:
        answer = json.loads(body)
    except ValueError as error:
        raise SourceError(f"ModelScope's answer for {source.repo} is not JSON") from error
    files = files_from_listing(answer, endpoint=endpoint, source=source)
    return Listing(source=uri, revision=source.revision, files=files, headers=headers)
