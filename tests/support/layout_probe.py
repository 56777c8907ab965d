"""Run as `python -m tests.support.layout_probe` from the repository root.

`-m` puts the root first on sys.path: `import operator` must still be the standard library.
"""

import operator

print(operator.__file__)
print(operator.eq(1, 1))
