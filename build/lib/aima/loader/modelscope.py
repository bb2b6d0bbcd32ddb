"""ModelScope's HTTP API.

Listing: `GET {endpoint}/api/v1/models/{repo}/repo/files?Revision=..&Recursive=true` answers
`{"Code": 200, "Data": {"Files": [{"Path", "Type": "blob"|"tree", "Size", "Sha256", "Revision",
"CommittedDate"}]}}`, where a file's `Revision` is the id of the commit it was listed at (the last
commit that changed it); a file is fetched from
`{endpoint}/api/v1/models/{repo}/repo?Revision=..&FilePath=..`.

The revision asked for (a branch such as `master`) is resolved once, by the listing: every file is
fetched at the commit the listing names for it, so a branch that moves during the download cannot
mix two revisions, and the manifest records the newest of those commits (the branch's head as its
files show it), as `hub` records the Hub's resolved sha. A listing that names no commit for a file
leaves that file at the revision asked for.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aima.loader import client as http
from aima.loader.errors import SourceError
from aima.loader.plan import Listing, RemoteFile
from aima.loader.source import ModelScopeSource

__all__ = ["DEFAULT_ENDPOINT", "files_from_listing", "list_files"]

DEFAULT_ENDPOINT = "https://www.modelscope.cn"

logger = logging.getLogger("aima.loader")

_COMMIT_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


def _commit(entry: Mapping[str, Any]) -> str | None:
    revision = entry.get("Revision")
    return revision if isinstance(revision, str) and _COMMIT_RE.match(revision) else None


def _newest_commit(entries: list[Mapping[str, Any]]) -> str | None:
    """The listed commit with the latest CommittedDate (epoch seconds); ties go to the greater id, so
    the choice does not depend on the listing's order."""
    dated = []
    for entry in entries:
        if commit := _commit(entry):
            when = entry.get("CommittedDate")
            dated.append((when if isinstance(when, int | float) else 0, commit))
    return max(dated)[1] if dated else None


def files_from_listing(
    answer: Mapping[str, Any], *, endpoint: str, source: ModelScopeSource
) -> tuple[str, tuple[RemoteFile, ...]]:
    """Pure: the commit the listing resolves the revision to (the revision itself when it names no
    commit), and its files (not directories), each pinned to the commit listed for it."""
    entries = (answer.get("Data") or {}).get("Files")
    if not isinstance(entries, list):
        raise SourceError(
            f"ModelScope's answer for {source.repo} has no file list: {answer.get('Message', '')}"
        )
    blobs = [entry for entry in entries if entry.get("Type") != "tree"]
    files = []
    for entry in blobs:
        query = urlencode({"Revision": _commit(entry) or source.revision, "FilePath": entry["Path"]})
        files.append(
            RemoteFile(
                path=entry["Path"],
                url=f"{endpoint}/api/v1/models/{source.repo}/repo?{query}",
                size=entry.get("Size"),
                sha256=entry.get("Sha256") or None,
            )
        )
    return _newest_commit(blobs) or source.revision, tuple(files)


async def list_files(
    client: http.Client, source: ModelScopeSource, *, uri: str, endpoint: str, headers: Mapping[str, str]
) -> Listing:
    """List the files of a ModelScope repository at a revision, resolved to its commit."""
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
    commit, files = files_from_listing(answer, endpoint=endpoint, source=source)
    if commit == source.revision and not _COMMIT_RE.match(commit):
        logger.warning(
            "%s: ModelScope's listing names no commit, so the files are fetched at %s as it stands, "
            "not pinned to a commit",
            uri,
            source.revision,
        )
    return Listing(source=uri, revision=commit, files=files, headers=headers)
