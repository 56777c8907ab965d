"""Run as `python -m tests.layout_probe` from the repository root (root first on sys.path)."""

import operator

print(operator.__file__)
print(operator.eq(1, 1))
