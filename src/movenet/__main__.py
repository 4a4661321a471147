"""``python -m movenet ...`` (and ``torchrun ... -m movenet train ...``): the ``movenet`` command."""
import sys

from .cli import main

sys.exit(main())
