"""Fixtures of the hook runner tests (test_hooks_runner, test_hooks_processes).

``root`` is an empty hooks tree, ``tmp_dir`` the directory the runner writes its document
files to (tests check it is left empty), ``runner`` a HookRunner over both with a 30 s
timeout. A test module that needs another shape defines its own fixture of the same name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vdsm_py.hooks import HookRunner


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "hooks"
    path.mkdir()
    return path


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    path = tmp_path / "tmp"
    path.mkdir()
    return path


@pytest.fixture
def runner(root: Path, tmp_dir: Path) -> HookRunner:
    return HookRunner(root, timeout=30, tmp_dir=tmp_dir)
