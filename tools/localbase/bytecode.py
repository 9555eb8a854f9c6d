"""mlenv's byte code, written once, as pip writes it when it installs the package.

These machines set PYTHONDONTWRITEBYTECODE, so every `python -m mlenv` started from the checkout would
compile every mlenv module it imports, at every start (0.7 s of a 3.9 s verify of the fraud image,
measured), which no installed mlenv does. The tests and the benchmarks start the CLI that way.
"""

from __future__ import annotations

import compileall
import functools
from pathlib import Path

import mlenv


@functools.cache
def compile_mlenv() -> None:
    compileall.compile_dir(str(Path(mlenv.__file__).parent), quiet=1)
