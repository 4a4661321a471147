"""Atomic outputs: their mode, files the shell opened (/dev/fd/N), a temporary file that cannot
be written, inputs reached through a link, the write probe, and what cannot be replaced."""
from __future__ import annotations

import errno
import os
import socket

import cv2
import numpy as np
import pytest

import movenet.cli
from movenet.cli import main
from movenet.errors import MoveNetError
from movenet.fileio import atomic_path, check_writable, write_json_atomic, write_text_atomic


def test_outputs_get_the_usual_mode_not_mkstemps(tmp_path):
    before = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "out.txt", "x\n")
        os.umask(0o027)
        write_text_atomic(tmp_path / "other.txt", "x\n")
    finally:
        os.umask(before)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "other.txt").stat().st_mode & 0o777 == 0o640


def test_a_file_the_shell_opened_for_appending_is_appended_to_in_place(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("earlier\n")
    inode = log.stat().st_ino
    with open(log, "a") as f:  # as `>> log.jsonl` hands it to the command
        write_json_atomic(f"/dev/fd/{f.fileno()}", {"a": 1}, indent=None)
    assert log.read_text() == 'earlier\n{"a": 1}\n'
    assert log.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]


def test_a_temporary_file_that_cannot_be_written_names_the_output(tmp_path):
    out = tmp_path / "out.json"
    with pytest.raises(MoveNetError, match=r"^.*out\.json: cannot write \(Permission denied\)$"):
        with atomic_path(out) as tmp:
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    assert list(tmp_path.iterdir()) == []


def test_another_files_permission_error_is_not_taken_for_the_outputs(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "out.json"):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("image_name, json_name", [("x.jpg", "link.jpg"), ("link.jpg", "x.jpg")])
def test_predict_refuses_a_json_that_is_its_image_through_a_link(tmp_path, capsys, monkeypatch, image_name, json_name):
    image = tmp_path / "x.jpg"
    cv2.imwrite(str(image), np.full((32, 32, 3), 90, np.uint8))
    content = image.read_bytes()
    (tmp_path / "link.jpg").symlink_to(image)

    def no_model(*args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(movenet.cli, "_predictor", no_model)
    assert main(["predict", str(tmp_path / image_name), "--json", str(tmp_path / json_name)]) == 2
    assert "--json would overwrite this input" in capsys.readouterr().err
    assert image.read_bytes() == content


def test_the_write_probe_leaves_nothing_behind(tmp_path):
    check_writable(tmp_path / "out.json")
    check_writable(tmp_path / "new" / "deeper", folder=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("missing, message", [(False, "cannot write there"), (True, "cannot create")])
def test_a_folder_that_takes_no_files_is_named_as_it_is(tmp_path, monkeypatch, missing, message):
    def refused(*args, **kwargs):  # (as in a read-only folder; root would write anyway)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("movenet.fileio.tempfile.mkstemp", refused)
    out = tmp_path / "sub" / "out.json" if missing else tmp_path / "out.json"
    with pytest.raises(MoveNetError) as e:
        check_writable(out)
    assert str(e.value).startswith(f"{out}: {message}")
    assert f"(creating a file in {tmp_path}: Permission denied)" in str(e.value)
    if missing:
        assert f"cannot create {tmp_path / 'sub'}" in str(e.value)


def test_an_output_that_is_neither_file_nor_stream_is_refused(tmp_path, monkeypatch):
    # what is neither a regular file, a folder nor a device or pipe: a block device, say; a
    # socket stands in, with is_stream told it is not one
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "out.json"))
        monkeypatch.setattr("movenet.fileio.is_stream", lambda path: False)
        with pytest.raises(MoveNetError, match=r"out.json: not a regular file; choose another name"):
            with atomic_path(tmp_path / "out.json"):
                pass
    finally:
        sock.close()


def test_an_output_in_new_nested_folders_makes_them(tmp_path):
    write_text_atomic(tmp_path / "a" / "b" / "out.txt", "x\n")
    assert (tmp_path / "a" / "b" / "out.txt").read_text() == "x\n"


def test_a_failed_write_removes_every_folder_it_made(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a" / "b" / "c" / "out.txt"):
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- edges found by mutation testing
def test_an_output_under_a_file_names_that_file_before_the_work(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("kept")
    with pytest.raises(MoveNetError) as e:
        check_writable(blocker / "sub" / "out.json")
    assert str(e.value) == f"{blocker / 'sub'}: cannot create the folder ({blocker} is a file)"
    assert blocker.read_text() == "kept"


def test_a_file_reached_through_proc_self_fd_is_appended_to_in_place(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("earlier\n")
    inode = log.stat().st_ino
    with open(log, "a") as f:
        write_json_atomic(f"/proc/self/fd/{f.fileno()}", {"a": 1}, indent=None)
    assert log.read_text() == 'earlier\n{"a": 1}\n' and log.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_dev_stdout_and_stderr_sent_to_a_log_are_appended_to_not_replaced(tmp_path, stream):
    import subprocess
    import sys

    log = tmp_path / "log.jsonl"
    log.write_text("earlier\n")
    inode = log.stat().st_ino
    with open(log, "a") as f:  # as `2>> log.jsonl` hands it to the command
        subprocess.run([sys.executable, "-c", "import sys; from movenet.fileio import write_json_atomic; "
                        "write_json_atomic(sys.argv[1], {'a': 1}, indent=None)", f"/dev/{stream}"],
                       check=True, timeout=60, **{stream: f})
    assert log.read_text() == 'earlier\n{"a": 1}\n' and log.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]


def test_a_socket_as_output_is_one_line_and_stays(tmp_path):
    import stat

    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "out.json"))
        with pytest.raises(MoveNetError, match=r"out\.json: cannot write \(No such device or address\)$"):
            write_json_atomic(tmp_path / "out.json", {"a": 1})
        assert stat.S_ISSOCK(os.stat(tmp_path / "out.json").st_mode)
    finally:
        sock.close()


def test_a_folder_that_cannot_be_synced_still_takes_the_file(tmp_path, monkeypatch):
    import stat

    real_fsync = os.fsync

    def fsync(fd):  # (some file systems refuse to sync a folder)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_json_atomic(tmp_path / "out.json", {"a": 1})
    assert (tmp_path / "out.json").read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_the_temporary_file_is_made_beside_the_output(tmp_path):
    # (renamed over the output: in another folder, perhaps on another disk, the rename would fail)
    with atomic_path(tmp_path / "out.json") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.json.") and tmp.exists()
        tmp.write_text("x")
    assert (tmp_path / "out.json").read_text() == "x"
