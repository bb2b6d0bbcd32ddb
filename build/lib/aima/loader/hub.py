"""The Hugging Face Hub's HTTP API (also served by mirrors such as hf-mirror.com via HF_ENDPOINT).

Listing: `GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true` answers the commit `sha`
and `siblings`, each with `rfilename`, `size` and, for LFS files, `lfs.sha256`. Files are fetched
from `{endpoint}/{repo}/resolve/{commit}/{path}`, pinned to the resolved commit so that a branch
moving during the download cannot mix two revisions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aima.loader import client as http
from aima.loader.errors import SourceError
from aima.loader.plan import Listing, RemoteFile
from aima.loader.source import HfSource

__all__ = ["DEFAULT_ENDPOINT", "files_from_revision_info", "list_files"]

DEFAULT_ENDPOINT = "https://huggingface.co"


def files_from_revision_info(
    info: Mapping[str, Any], *, endpoint: str, repo: str
) -> tuple[str, tuple[RemoteFile, ...]]:
    """Pure: the commit and the files of a `/api/models/.../revision/...?blobs=true` answer."""
    commit = info.get("sha")
    siblings = info.get("siblings")
    if not isinstance(commit, str) or not isinstance(siblings, list):
        raise SourceError(f"The Hub's answer for {repo} has no commit sha or file list")
    files = []
    for sibling in siblings:
        path = sibling["rfilename"]
        lfs = sibling.get("lfs") or {}
        files.append(
            RemoteFile(
                path=path,
                url=f"{endpoint}/{repo}/resolve/{commit}/{quote(path)}",
                size=lfs.get("size", sibling.get("size")),
                # Only LFS files publish a sha256; the others carry a git blob id (sha1 of a header and
                # the content), which we do not check: they are small text files and their size is.
                sha256=lfs.get("sha256"),
            )
        )
    return commit, tuple(files)


async def list_files(
    client: http.Client, source: HfSource, *, uri: str, endpoint: str, headers: Mapping[str, str]
) -> Listing:
    """List the files of a Hub repository at a revision."""
    url = f"{endpoint}/api/models/{source.repo}/revision/{quote(source.revision, safe='')}"
    body = await http.get_bytes(
        client,
        url,
        headers=headers,
        params={"blobs": "true"},
        what=f"Hub repository {source.repo}@{source.revision}",
    )
    try:
        info = json.loads(body)
    except ValueError as error:
        raise SourceError(f"The Hub's answer for {source.repo} is not JSON") from error
    commit, files = files_from_revision_info(info, endpoint=endpoint, repo=source.repo)
    return Listing(source=uri, revision=commit, files=files, headers=headers)
