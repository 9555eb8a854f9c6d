"""Test fixture: `_, _, last = x(), y(), z()` binds `_` to y() and `last` to z() (left to right).

CPython 3.11.0-3.11.3 bind `_` to x(): their compiler drops the SWAP by exchanging the first store with
the third, where 3.11.4 and later keep it (python/cpython gh-104615).
sympy 1.13.3's logic/algorithms/lra_theory.py (LRASolver._pivot) has this line.
"""


def three(x, y, z):
    _, _, last = x(), y(), z()
    return _, last
