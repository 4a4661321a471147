"""The one error type shown to users as a single line (no traceback) by the CLI, and the
warning about data that the CLI shows as one line too."""
import warnings


class MoveNetError(Exception):
    """A user-facing problem: bad input file, missing weights, wrong architecture..."""


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


class DataWarning(UserWarning):
    """Something odd about the data that does not stop the work (an image skipped, an image
    whose size differs from its annotation's)."""


def one_line_data_warnings() -> None:
    """Show ``DataWarning``s as ``movenet: warning: MESSAGE``, without Python's file and line
    (those of other warnings are kept)."""
    default = warnings.formatwarning
    if getattr(default, "one_line_data_warnings", False):  # installed already
        return

    def format_warning(message, category, filename, lineno, line=None):
        if issubclass(category, DataWarning):
            return f"movenet: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    format_warning.one_line_data_warnings = True
    warnings.formatwarning = format_warning
