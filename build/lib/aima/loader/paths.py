"""File names from a source, checked so that nothing lands outside the model directory.

`check_relative` is pure: it refuses names that are absolute, contain `..`, backslashes, NUL or
empty components, or collide with the loader's own files. `prepare_target` does the I/O half: it
creates parent directories one at a time and refuses any that is a symlink, so a directory planted
as a link cannot redirect a write (the `.part` file is then opened with O_NOFOLLOW).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from aima.loader.errors import UnsafePathError

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "PART_SUFFIX", "check_relative", "part_path", "prepare_target"]

MANIFEST_NAME = ".aima-manifest.json"
LOCK_NAME = ".aima-lock"
PART_SUFFIX = ".part"
_RESERVED = {MANIFEST_NAME, LOCK_NAME}


def check_relative(name: str) -> PurePosixPath:
    """Return `name` as a relative POSIX path inside the model directory, or raise UnsafePathError."""
    reason = _unsafe_reason(name)
    if reason:
        raise UnsafePathError(f"Refused file name {name!r} from the source: {reason}")
    return PurePosixPath(name)


def _unsafe_reason(name: str) -> str:
    if not name:
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL byte"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "it is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "it climbs out of the model directory with '..'"
    if any(part in {"", "."} for part in parts):
        return "it has an empty or '.' path component"
    if name in _RESERVED or name.startswith(LOCK_NAME):
        return "it collides with the loader's own files"
    return ""


def part_path(target: Path) -> Path:
    """Where a file is written until it is complete and verified."""
    return target.with_name(target.name + PART_SUFFIX)


def prepare_target(dest: Path, relative: PurePosixPath) -> Path:
    """Create the parents of `dest/relative` and return its path; refuse symlinked components.

    Assumes `relative` passed `check_relative`. Not pure: creates directories.
    """
    root = dest.resolve()
    current = root
    for part in relative.parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise UnsafePathError(f"Refused file {str(relative)!r}: {part!r} in its path is a symlink")
        current.mkdir(exist_ok=True)
    target = current / relative.name
    for candidate in (target, part_path(target)):
        if candidate.is_symlink():
            raise UnsafePathError(f"Refused file {str(relative)!r}: {candidate.name!r} is a symlink")
    # Belt and braces: a race that swapped a directory for a link after the checks shows here.
    if not target.parent.resolve().is_relative_to(root):
        raise UnsafePathError(f"Refused file {str(relative)!r}: it resolves outside {dest}")
    return target
