"""The one error type shown to users as a single line (no traceback) by the CLI."""


class MoveNetError(Exception):
    """A user-facing problem: bad input file, missing weights, wrong architecture..."""
