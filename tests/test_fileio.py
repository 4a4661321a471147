"""Output files: written whole or not at all, in folders that can be made (else one line)."""
from __future__ import annotations

import re

import pytest

from movenet.errors import MoveNetError
from movenet.fileio import atomic_path, make_folder, write_json_atomic


def test_outputs_in_a_folder_that_cannot_be_made_are_one_line_errors(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("kept")
    for path in (blocker, blocker / "sub" / "deeper"):
        with pytest.raises(MoveNetError, match=rf"^{re.escape(str(path))}: cannot create the folder "
                                               rf"\({re.escape(str(blocker))} is a file\)$"):
            make_folder(path)
    with pytest.raises(MoveNetError, match=r"afile: cannot create the folder \(.*afile is a file\)$"):
        write_json_atomic(blocker / "out.json", {})
    (tmp_path / "folder").mkdir()
    with pytest.raises(MoveNetError, match=r"folder: is a folder, not a file"):
        write_json_atomic(tmp_path / "folder", {})
    assert blocker.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]
    assert make_folder(tmp_path / "a" / "b").is_dir()



def test_a_failed_write_leaves_the_earlier_file_and_no_temporary(tmp_path):
    out = tmp_path / "out.json"
    write_json_atomic(out, {"a": 1})
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_path(out) as tmp:
            tmp.write_text('{"a": ')
            raise RuntimeError("half-way")
    assert out.read_text() == '{\n  "a": 1\n}\n' and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failed_write_leaves_no_folder_it_made(tmp_path):
    from movenet.fileio import atomic_path

    out = tmp_path / "new" / "deeper" / "x.json"
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the work failed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "kept" / "x.json"):
            raise RuntimeError("the work failed")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]  # a folder that was there stays
    with atomic_path(out) as tmp:
        tmp.write_text("whole")
    assert out.read_text() == "whole"
