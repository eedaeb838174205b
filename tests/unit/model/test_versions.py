"""Which model version a worker loads next from a directory of versions (model/versions.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stream_app.core.config import Settings
from stream_app.model.artifact import ArtifactError
from stream_app.model.versions import ModelVersions, is_single_artifact, version_dirs
from stream_app.service.reload import ModelReloader
from tests.unit.model.conftest import L


def make(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "metadata.json").write_text("{}")
    return path


def test_versions_in_name_order_numbers_as_numbers_hidden_ignored(tmp_path: Path) -> None:
    for name in ("v10", "v9", "v2", ".v11.tmp"):
        make(tmp_path, name)
    (tmp_path / "notes.txt").write_text("not a version")
    assert [p.name for p in version_dirs(tmp_path)] == ["v2", "v9", "v10"]
    assert not is_single_artifact(tmp_path) and is_single_artifact(tmp_path / "v2")


def test_candidates_are_newer_than_the_current_newest_first(tmp_path: Path) -> None:
    v1, v2, v3 = (make(tmp_path, n) for n in ("v1", "v2", "v3"))
    versions = ModelVersions(tmp_path)
    assert versions.candidates(None) == [v3, v2, v1]
    assert versions.candidates(v2) == [v3]
    assert versions.candidates(v3) == []


def test_a_refused_version_is_tried_again_only_once_its_files_change(tmp_path: Path) -> None:
    v1, v2 = make(tmp_path, "v1"), make(tmp_path, "v2")
    versions = ModelVersions(tmp_path)
    versions.refuse(v2)
    assert versions.candidates(v1) == []
    later = (v2 / "metadata.json").stat().st_mtime + 5
    os.utime(v2 / "metadata.json", (later, later))  # the version was fixed in place
    assert versions.candidates(v1) == [v2]


def test_a_worker_starts_on_the_newest_servable_version(artifact: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Startup: a broken newest version is refused (logged), the one before it serves; with no
    servable version at all, a clear error."""
    shutil.copytree(artifact, tmp_path / "v1")
    make(tmp_path, "v2")  # metadata without a schema version: not servable
    settings = Settings(model_dir=tmp_path, window_length=L)
    reloader = ModelReloader(settings)
    model = reloader.first()
    assert reloader.path == tmp_path / "v1" and model.version
    assert "model version v2 refused, trying an older one" in caplog.text
    shutil.rmtree(tmp_path / "v1")
    with pytest.raises(ArtifactError, match="no servable model version"):
        ModelReloader(settings).first()
