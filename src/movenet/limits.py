"""Upper bounds on numbers users give (options, configs, ``NAME@SIZE``): past them a value is a
typo, and would otherwise end in an overflow, an allocation failure or a crash deep in a
library instead of a one-line error. No heavy imports (the CLI parser uses them)."""

MAX_THREADS = 1024
MAX_INPUT_SIZE = 2048  # pixels; Thunder runs at 256
FLOAT32_MAX = 3.4028234663852886e38  # larger numbers overflow in the first tensor they reach
