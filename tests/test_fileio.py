"""Output files: written whole or not at all, in folders that can be made (else one line)."""
from __future__ import annotations

import json
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


def test_a_full_disk_is_one_line_naming_the_output(tmp_path):
    import errno

    out = tmp_path / "out.json"
    out.write_text("earlier")
    failures = [OSError(errno.ENOSPC, "No space left on device"),
                RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 32")]  # torch.save's
    for failure, reason in zip(failures, ["No space left on device", "is the disk full?"]):
        with pytest.raises(MoveNetError, match=rf"^{re.escape(str(out))}: cannot write \(.*{re.escape(reason)}\)$"):
            with atomic_path(out) as tmp:
                tmp.write_text("half")
                raise failure
    with pytest.raises(RuntimeError, match="something else"):  # not a write failure: as it was
        with atomic_path(out):
            raise RuntimeError("something else")
    assert out.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_link_keeps_pointing_at_the_replaced_file_and_devices_and_pipes_are_written_in_place(tmp_path):
    import os
    import stat
    import threading

    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    write_json_atomic(link, {"a": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"a": 1}

    if stat.S_ISCHR(os.stat(os.devnull).st_mode):  # (some containers have a plain file there)
        write_json_atomic(os.devnull, {"a": 1})  # a device stays a device
        assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    # (a daemon: were the pipe replaced by a file, the reader would wait for a writer forever)
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    write_json_atomic(fifo, {"b": 2})
    reader.join(10)
    assert json.loads(received[0]) == {"b": 2} and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "pipe", "target.json"]


def test_a_full_device_is_one_line_and_files_read_back_are_refused_as_pipes(tmp_path, capsys):
    import os
    import stat

    from movenet.cli import main

    if os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode):
        with pytest.raises(MoveNetError, match=r"^/dev/full: cannot write \(No space left on device\)$"):
            write_json_atomic("/dev/full", {"a": 1})
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    assert main(["export", "lightning", "--output", str(fifo)]) == 2  # (reading it back would wait forever)
    assert capsys.readouterr().err == (f"movenet: error: {fifo}: an exported model is read back to check it, so it "
                                       "must be a file (not a device or pipe)\n")
    video = tmp_path / "clip.mp4"
    os.mkfifo(video)
    assert main(["video", str(tmp_path / "in.mp4"), "--out", str(video)]) == 2
    assert capsys.readouterr().err == (f"movenet: error: {video}: an mp4 is written with its index last, so it must "
                                       "be a file (not a device or pipe)\n")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISFIFO(os.stat(video).st_mode)


def test_a_file_is_on_disk_before_its_name_points_at_it(tmp_path, monkeypatch):
    import errno
    import os
    import stat

    synced = []

    def fsync(fd):
        where = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((os.path.basename(where), (tmp_path / "out.json").exists()))

    monkeypatch.setattr(os, "fsync", fsync)
    write_json_atomic(tmp_path / "out.json", {"a": 1})
    assert len(synced) == 2 and synced[0][0].startswith(".out.json.") and synced[0][1] is False  # before
    assert synced[1] == (tmp_path.name, True)  # then the folder that names it
    assert stat.S_IMODE(os.stat(tmp_path / "out.json").st_mode) == 0o666 & ~_umask()

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(MoveNetError, match=r"out.json: cannot write \(Input/output error\)"):
        write_json_atomic(tmp_path / "out.json", {"a": 2})
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
