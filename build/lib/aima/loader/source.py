"""Parsing of model source URIs (pure).

Supported forms:

- `hf://org/repo@revision`: the Hugging Face Hub HTTP API (revision defaults to `main`)
- `modelscope://org/repo@revision`: ModelScope's API (revision defaults to `master`)
- `ollama://library/name:tag`: an OCI-style registry serving Ollama manifests (tag defaults to
  `latest`; a bare `name` means `library/name`, as in `ollama pull`)
- `https://host/path/file` (and `http://` for local mirrors): a single file; an optional
  `#sha256=<hex>` fragment gives the digest to verify against
- `s3://bucket/prefix`: the objects under a prefix (a folder, or one object's key) of an S3 bucket
  or an S3-compatible store, named relative to the prefix
- `pvc://claim/path`: files already on a volume; the loader only verifies them
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from aima.loader.errors import SourceError

__all__ = [
    "HfSource",
    "HttpSource",
    "ModelScopeSource",
    "OllamaSource",
    "PvcSource",
    "S3Source",
    "Source",
    "parse_source",
    "with_revision",
]

# Hub and ModelScope repo ids: one owner segment and one name segment, no dots-only segments.
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
# Docker distribution's name grammar, lower-case path components separated by slashes.
_OLLAMA_NAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_OLLAMA_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# S3's bucket names, with the upper case and underscores that old us-east-1 buckets may have.
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")


@dataclass(frozen=True)
class HfSource:
    """A Hugging Face Hub repository at a revision (branch, tag or commit)."""

    repo: str
    revision: str = "main"


@dataclass(frozen=True)
class ModelScopeSource:
    """A ModelScope repository at a revision."""

    repo: str
    revision: str = "master"


@dataclass(frozen=True)
class OllamaSource:
    """An Ollama model in a registry: `name` such as `library/qwen2`, `tag` such as `7b`."""

    name: str
    tag: str = "latest"


@dataclass(frozen=True)
class HttpSource:
    """A single file at a URL; `sha256` when the URI's fragment published one."""

    url: str
    filename: str
    sha256: str | None = None


@dataclass(frozen=True)
class PvcSource:
    """Files already present on a claim; `path` is the model directory inside it."""

    claim: str
    path: str = ""


@dataclass(frozen=True)
class S3Source:
    """Objects of an S3 bucket: those under the folder `prefix`, or the one object of that key; the
    whole bucket when `prefix` is empty. No leading or trailing slash."""

    bucket: str
    prefix: str = ""


Source = HfSource | ModelScopeSource | OllamaSource | HttpSource | S3Source | PvcSource


def parse_source(uri: str) -> Source:
    """Parse a source URI; raise SourceError naming the problem when it is malformed."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise SourceError(
            f"Source {uri!r} has no scheme; expected hf://, modelscope://, ollama://, https://, s3:// or pvc://"
        )
    parsers = {
        "hf": _parse_hf,
        "modelscope": _parse_modelscope,
        "ollama": _parse_ollama,
        "https": _parse_http,
        "http": _parse_http,
        "s3": _parse_s3,
        "pvc": _parse_pvc,
    }
    parser = parsers.get(scheme.lower())
    if parser is None:
        raise SourceError(f"Source {uri!r} has an unsupported scheme {scheme!r}")
    return parser(uri, rest)


def with_revision(source: Source, revision: str | None) -> Source:
    """Return the source with its revision (or Ollama tag) replaced, when one is given."""
    if not revision:
        return source
    match source:
        case HfSource():
            return HfSource(source.repo, _checked_revision(revision, uri=revision))
        case ModelScopeSource():
            return ModelScopeSource(source.repo, _checked_revision(revision, uri=revision))
        case OllamaSource():
            return OllamaSource(source.name, _checked_tag(revision, uri=revision))
        case _:
            raise SourceError(f"A revision override does not apply to {type(source).__name__}")


def _split_repo(uri: str, rest: str, *, default_revision: str) -> tuple[str, str]:
    repo, _, revision = rest.partition("@")
    if not _REPO_RE.match(repo) or any(part in {".", ".."} for part in repo.split("/")):
        raise SourceError(f"Source {uri!r} does not name a repository as org/name")
    return repo, _checked_revision(revision or default_revision, uri=uri)


def _checked_revision(revision: str, *, uri: str) -> str:
    # Revisions go into URL paths: refuse anything that could change the path's meaning.
    if not _REVISION_RE.match(revision) or ".." in revision:
        raise SourceError(f"Source {uri!r} has an invalid revision {revision!r}")
    return revision


def _checked_tag(tag: str, *, uri: str) -> str:
    if not _OLLAMA_TAG_RE.match(tag):
        raise SourceError(f"Source {uri!r} has an invalid tag {tag!r}")
    return tag


def _parse_hf(uri: str, rest: str) -> Source:
    repo, revision = _split_repo(uri, rest, default_revision="main")
    return HfSource(repo, revision)


def _parse_modelscope(uri: str, rest: str) -> Source:
    repo, revision = _split_repo(uri, rest, default_revision="master")
    return ModelScopeSource(repo, revision)


def _parse_ollama(uri: str, rest: str) -> Source:
    name, _, tag = rest.partition(":")
    if "/" not in name:
        name = f"library/{name}"
    if not _OLLAMA_NAME_RE.match(name):
        raise SourceError(f"Source {uri!r} does not name an Ollama model as namespace/name:tag")
    return OllamaSource(name, _checked_tag(tag or "latest", uri=uri))


def _parse_http(uri: str, rest: str) -> Source:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise SourceError(f"Source {uri!r} has no host")
    filename = unquote(parts.path.rsplit("/", 1)[-1])
    if not filename:
        raise SourceError(f"Source {uri!r} does not end in a file name")
    sha256 = None
    if parts.fragment:
        key, _, value = parts.fragment.partition("=")
        if key != "sha256" or not _SHA256_RE.match(value.lower()):
            raise SourceError(f"Source {uri!r} has a fragment other than #sha256=<64 hex digits>")
        sha256 = value.lower()
    return HttpSource(parts._replace(fragment="").geturl(), filename, sha256)


def _parse_s3(uri: str, rest: str) -> Source:
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise SourceError(f"Source {uri!r} does not name an S3 bucket as s3://bucket/prefix")
    prefix = prefix.strip("/")
    # Keys are sent in URL paths, where `.` and `..` segments would be resolved away.
    if any(part in {".", ".."} for part in prefix.split("/")) or any(ord(c) < 32 for c in prefix):
        raise SourceError(f"Source {uri!r} has a prefix with '.' or '..' segments or control characters")
    return S3Source(bucket, prefix)


def _parse_pvc(uri: str, rest: str) -> Source:
    claim, _, path = rest.partition("/")
    if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", claim):
        raise SourceError(f"Source {uri!r} does not name a PersistentVolumeClaim")
    if any(part == ".." for part in path.split("/")):
        raise SourceError(f"Source {uri!r} has a path that leaves the claim")
    return PvcSource(claim, path.strip("/"))
