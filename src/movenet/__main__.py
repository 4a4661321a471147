"""``python -m movenet ...`` (and ``torchrun ... -m movenet train ...``): the ``movenet`` command."""
from .cli import entry

entry()
