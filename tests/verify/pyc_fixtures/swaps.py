"""Test fixture: `_, _ = first(), second()` binds `_` to second() (the language's left-to-right rule).

CPython 3.11.0-3.11.3 bind it to first(): their compiler drops the SWAP before the two stores
(python/cpython gh-104615, fixed in 3.11.4). sympy 1.12.1's polys/ring_series.py (rs_cos) has this line.
"""


def pair(first, second):
    _, _ = first(), second()
    return _
