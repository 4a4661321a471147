"""The one error type shown to users as a single line (no traceback) by the CLI, and the
warning about data that the CLI shows as one line too."""
import sys
import warnings


class MoveNetError(Exception):
    """A user-facing problem: bad input file, missing weights, wrong architecture..."""


class SaidElsewhere(MoveNetError):
    """A problem another process of the same run on this machine has already printed (under
    torchrun each process meets the same bad config): exit as it does, without a second line."""


def user_message(error: BaseException) -> str:
    """``error``'s one line. An error raised in a DataLoader worker reaches the main process
    re-raised with the worker's traceback in its message ("Caught MoveNetError in DataLoader
    worker process 0. Original Traceback ..."); its last line holds the original message."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
        text = last[len(prefix):] if last.startswith(prefix) else last
    return text


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of another library's error message, cut at a word near ``limit``."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " ..."


def some_of(names, shown: int = 3) -> str:
    """The first ``shown`` of ``names`` for a message, ``", ..."`` after them when there are more."""
    names = [str(n) for n in names]
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


SINGULAR = {"images": "image", "people": "person", "keypoints": "keypoint", "files": "file", "photos": "photo",
            "frames": "frame"}


def counted(n: int, what: str) -> str:
    """``"3 images with crowd regions"``, ``"1 image with crowd regions"``: the plural noun of
    ``what`` (its first or second word) made singular for one."""
    if n == 1:
        words = what.split(" ")
        for i, word in enumerate(words[:2]):
            if word in SINGULAR:
                words[i] = SINGULAR[word]
                break
        what = " ".join(words)
    return f"{n} {what}"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM: ``terminated``) that was handled: what was kept and how to go on is
    already printed."""

    def __init__(self, terminated: bool = False):
        super().__init__()
        self.terminated = terminated


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a scheduler), raised where the command is, as Ctrl-C: what is
    being written is removed on the way out."""


class DataWarning(UserWarning):
    """Something odd about the data that does not stop the work (an image skipped, an image
    whose size differs from its annotation's)."""


def one_line_data_warnings() -> None:
    """Show ``DataWarning``s as ``movenet: warning: MESSAGE``, without Python's file and line
    (those of other warnings are kept), on a line of their own beside a tqdm progress bar."""
    default_format, default_show = warnings.formatwarning, warnings.showwarning
    if one_line_data_warnings_installed():
        return

    def format_warning(message, category, filename, lineno, line=None):
        if issubclass(category, DataWarning):
            return f"movenet: warning: {message}\n"
        return default_format(message, category, filename, lineno, line)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning) and file is None:
            from tqdm import tqdm
            tqdm.write(format_warning(message, category, filename, lineno).rstrip("\n"), file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    format_warning.one_line_data_warnings = True
    warnings.formatwarning, warnings.showwarning = format_warning, show_warning


def one_line_data_warnings_installed() -> bool:
    return getattr(warnings.formatwarning, "one_line_data_warnings", False)


def script_main(main) -> None:
    """The entry of a script (``benchmarks/``): ``main()``, its return value as the exit status;
    a ``MoveNetError`` (a missing file, a bad model) as one line on stderr and exit status 2."""
    import os

    try:
        code = main()
    except MoveNetError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {user_message(e)}", file=sys.stderr)
        code = 2
    sys.exit(code or 0)
