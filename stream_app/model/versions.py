"""Model versions: ``TRACKER_MODEL_DIR`` is one artifact, or a directory of versions.

A directory of versions holds one artifact per subdirectory; the newest is the last in name order
(numbers compare as numbers: ``v9`` < ``v10``), so names like ``v0007`` or ``2026-12-03T1200`` work.
Names starting with ``.`` are ignored: publish a version by writing it under such a name and then
renaming it (one atomic rename on one file system), so a worker never sees half an artifact.

A worker serves the newest version it can serve and keeps looking for newer ones
(:class:`ModelVersions`); a version it cannot serve is refused once (until its files change) and the
one in service goes on.
"""

from __future__ import annotations

import re
from pathlib import Path

from stream_app.model.artifact import METADATA_FILE


def is_single_artifact(path: Path) -> bool:
    """True when ``path`` is an artifact itself rather than a directory of versions."""
    return (path / METADATA_FILE).exists()


def _name_key(path: Path) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"(\d+)", path.name) if part]


def version_dirs(root: Path) -> list[Path]:
    """The published versions under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_name_key)


def _stamp(path: Path) -> float:
    """When the version's files last changed (a refused version is tried again after that)."""
    return max((f.stat().st_mtime for f in path.iterdir()), default=path.stat().st_mtime)


class ModelVersions:
    """Which version of a directory of versions to load next: the newest one newer than the one in
    service that was not refused since its files last changed."""

    def __init__(self, root: Path):
        self.root = root
        self.refused: dict[Path, float] = {}

    def candidates(self, current: Path | None) -> list[Path]:
        """Versions worth loading, newest first (only newer than ``current``, if one serves)."""
        found = version_dirs(self.root)
        if current is not None:
            found = [p for p in found if _name_key(p) > _name_key(current)]
        return [p for p in reversed(found) if self.refused.get(p) != _stamp(p)]

    def refuse(self, path: Path) -> None:
        self.refused[path] = _stamp(path)
