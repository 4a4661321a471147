"""Atomic file writing: an output is either complete or absent."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import MoveNetError


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The file, if any, at ``folder`` or at one of its parents: what stops it being made."""
    folder = Path(folder)
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def make_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder (created with its parents), or a one-line error naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise MoveNetError(f"{path}: cannot create the folder ({file_in_the_way(path) or path} is a file)") from None
    except OSError as e:
        raise MoveNetError(f"{path}: cannot create the folder ({e.strerror}: {e.filename})") from None
    return path


def check_writable(path: str | os.PathLike, folder: bool = False) -> Path:
    """Fail now, not after the work, where ``path`` cannot be written: a file (``folder=False``,
    written beside itself and renamed) must not be a folder, a folder (``folder=True``) not a
    file, and the nearest existing folder on the way must take new files. Creates nothing."""
    if not folder and str(path).endswith(("/", os.sep)):  # (Path() would drop the slash)
        raise MoveNetError(f"{path}: names a folder; give a file name")
    path = Path(path)
    if not folder and path.is_dir():
        raise MoveNetError(f"{path}: is a folder, not a file")
    if not folder and is_stream(path):
        if not os.access(path, os.W_OK):
            raise MoveNetError(f"{path}: cannot write there (permission denied)")
        return path
    where = path if folder else path.parent
    existing = next(p for p in (where, *where.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise MoveNetError(f"{where}: cannot create the folder ({existing} is a file)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".movenet-write-test.", dir=existing)
    except OSError as e:
        missing = f"cannot create {where}" if existing != where else "cannot write there"
        raise MoveNetError(f"{path}: {missing} (creating a file in {existing}: {e.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return path


LOCK_FILE = ".movenet.lock"


def lock_folder(path: str | os.PathLike, holder: str) -> int | None:
    """An exclusive lock on the folder ``path`` (created if missing), through its ``LOCK_FILE``,
    for as long as the returned descriptor stays open (``os.close`` it) and the process lives,
    or a one-line error when another process holds it (``holder``: what holds such locks, for
    the message). A POSIX record lock: processes forked from the holder (data loader workers) do
    not hold it, so it ends with the process that took it. None where the system or the file
    system has no such locks."""
    try:
        import fcntl
    except ImportError:  # (Windows)
        return None
    folder = make_folder(path)
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise MoveNetError(f"{folder}: cannot write there ({e.strerror})") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EACCES, errno.EAGAIN):
            raise MoveNetError(f"{folder}: {holder} is writing there now; wait for it or choose another "
                               "folder") from None
        return None  # a file system without locks (some network ones)
    return fd


def shared_files(paths, others) -> list:
    """The ``paths`` that are the same file as one of ``others`` (compared by real path)."""
    known = {os.path.realpath(p) for p in others}
    return [p for p in paths if os.path.realpath(p) in known]


def refuse_overwriting_inputs(outputs, inputs, option: str, what: str = "input") -> None:
    """A one-line error when an output path is one of the ``inputs`` (or other outputs: ``what``)."""
    shared = shared_files(outputs, inputs)
    if shared:
        raise MoveNetError(f"{shared[0]}: {option} would overwrite this {what}; choose another name")


def is_stream(path: str | os.PathLike) -> bool:
    """Whether ``path`` is written in place, as there is nothing to replace atomically: a
    character device or a pipe (/dev/null, a FIFO), or one of this process' open files
    (/dev/stdout, /dev/fd/N: whatever the shell sent them to, perhaps a file opened for appending)."""
    name = os.path.abspath(path)
    if name in ("/dev/stdout", "/dev/stderr") or name.startswith(("/dev/fd/", "/proc/self/fd/")):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def refuse_stream(path: str | os.PathLike, why: str) -> None:
    """A one-line error when ``path`` is a device or pipe but must be a file (``why``)."""
    if is_stream(path):
        raise MoveNetError(f"{path}: {why}, so it must be a file (not a device or pipe)")


def open_text_output(path: str | os.PathLike):
    """``path`` (from ``atomic_path``) opened for text: a stream is appended to, so that a
    file the shell opened for appending (``>> log`` behind /dev/stdout) keeps what it held."""
    return open(path, "a" if is_stream(path) else "w")


# What a write that ran out of room (or was refused by the disk) raises: a one-line error naming
# the output. torch.save reports it as a RuntimeError of its zip writer.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
_TORCH_WRITER_ERRORS = ("PytorchStreamWriter", "inline_container")


def write_failure(error: Exception, tmp: Path | None = None) -> str | None:
    """Why ``error`` stopped a write, in a few words, when it is a write that ran out of room
    (or ``tmp`` could not be written); None for any other error."""
    if isinstance(error, OSError) and (error.errno in _WRITE_ERRNOS or (tmp and error.filename == str(tmp))):
        return error.strerror or str(error)
    if isinstance(error, RuntimeError) and any(s in str(error) for s in _TORCH_WRITER_ERRORS):
        return "the file could not be written completely: is the disk full?"
    return None


@contextlib.contextmanager
def write_errors_named(path: str | os.PathLike, tmp: Path | None = None) -> Iterator[None]:
    """A failed write in the block (``write_failure``) becomes a one-line error naming ``path``."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        reason = write_failure(e, tmp)
        if reason is None:
            raise
        raise MoveNetError(f"{path}: cannot write ({reason})") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.
    A symbolic link's target is replaced (the link stays); a device or pipe is written in place.
    A write that fails for want of room is a one-line error naming ``path``."""
    path = Path(path)
    if is_stream(path):  # (through links: /dev/stdout)
        with write_errors_named(path, path):
            yield path
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.is_dir():
        raise MoveNetError(f"{path}: is a folder, not a file")
    if path.exists() and not path.is_file():
        raise MoveNetError(f"{path}: not a regular file; choose another name")
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # folders this makes
    make_folder(path.parent)
    done = False
    try:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        except OSError as e:
            raise MoveNetError(f"{path}: cannot write ({e.strerror})") from None
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            with write_errors_named(path, tmp_path):
                yield tmp_path
                # On disk before the name points at it: after a power cut the old file or the
                # new one, never an empty one.
                _sync(tmp_path)
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give outputs the usual mode
                os.replace(tmp_path, path)
            done = True
            _sync(path.parent, folder=True)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()
    finally:
        if not done:  # a failed write leaves no empty folders behind either
            for folder in made:  # deepest first
                try:
                    folder.rmdir()
                except OSError:  # not empty (something else wrote there) or gone
                    break


def _sync(path: Path, folder: bool = False) -> None:
    """Flush ``path`` to the disk. A folder that cannot be opened or synced (a write-only folder,
    some file systems) is left: its file is on disk already."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not folder:
            raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open_text_output(tmp) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")
