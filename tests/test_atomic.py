"""atomic_file: a reader sees the old file or the whole new one; a failed write leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.atomic import atomic_file


def test_replaces_the_file_when_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "model.npz"
    with atomic_file(path) as f:
        f.write(b"new")
        assert not path.exists()  # not visible before the block ends
    assert path.read_bytes() == b"new"
    assert list(path.parent.iterdir()) == [path]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as f:
        f.write(b"half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_mode_follows_the_umask_like_any_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    with atomic_file(tmp_path / "atomic") as f:
        f.write(b"x")
    assert os.stat(tmp_path / "atomic").st_mode == os.stat(plain).st_mode
