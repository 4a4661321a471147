"""The one error type shown to users as a single line (no traceback) by the CLI."""


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
