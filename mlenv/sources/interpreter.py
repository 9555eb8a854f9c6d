"""Ask a Python interpreter where it imports from: `mlenv check` runs it only for an interpreter that
is not a venv's (a system or conda Python), whose site directories cannot be told from files alone.

It runs as `python -I -c QUERY`: isolated, so no PYTHON* variable, user site or current directory
changes what it answers, and the query imports nothing but the standard library. Its answer is JSON,
bounded in size and time; anything else is one error line naming the interpreter.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from mlenv.errors import MlenvError

# What the interpreter prints: its exact version, prefixes, sys.path and the user site it would add
# when not isolated (-I leaves it out; the user's own runs do not).
QUERY = (
    "import json, platform, site, sys; print(json.dumps({"
    "'version': platform.python_version(), 'implementation': sys.implementation.name, "
    "'prefix': sys.prefix, 'base_prefix': sys.base_prefix, 'path': sys.path, "
    "'user_site': site.getusersitepackages()}))"
)
TIMEOUT = 30  # seconds: an interpreter start takes well under one; a hung one must not hang check
MAX_ANSWER = 1 << 20  # bytes: sys.path of any real environment is a few kilobytes


@dataclass(frozen=True, kw_only=True)
class InterpreterAnswer:
    version: str  # platform.python_version(): "3.11.7", "3.13.0rc1"
    implementation: str  # "cpython", "pypy"
    prefix: str
    base_prefix: str
    path: tuple[str, ...]  # sys.path under -I, in import order
    user_site: str | None


class InterpreterError(MlenvError):
    """The interpreter a user named cannot be run or does not answer like Python 3."""


def ask_interpreter(python: str, *, what: str) -> InterpreterAnswer:
    """Run `python -I -c QUERY`; `what` names it in an error ("--python /usr/bin/python3")."""
    try:
        result = subprocess.run(
            [python, "-I", "-c", QUERY],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise InterpreterError(f"{what}: no such interpreter") from None
    except PermissionError:
        raise InterpreterError(f"{what}: not executable") from None
    except subprocess.TimeoutExpired:
        raise InterpreterError(f"{what}: gave no answer in {TIMEOUT} s when asked for its sys.path") from None
    except OSError as error:
        raise InterpreterError(f"{what}: cannot be run ({error.strerror or error})") from None
    if result.returncode != 0:
        last = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise InterpreterError(
            f"{what}: exited {result.returncode} when asked for its sys.path ({last[0][:200]})"
        )
    return _answer(result.stdout, what)


def _answer(output: bytes, what: str) -> InterpreterAnswer:
    if len(output) > MAX_ANSWER:
        raise InterpreterError(f"{what}: answered {len(output)} bytes, not a Python interpreter's sys.path")
    try:
        data = json.loads(output.decode("utf-8"))
        path = data["path"]
        answer = InterpreterAnswer(
            version=str(data["version"]),
            implementation=str(data["implementation"]),
            prefix=str(data["prefix"]),
            base_prefix=str(data["base_prefix"]),
            path=tuple(str(p) for p in path) if isinstance(path, list) else (),
            user_site=str(data["user_site"]) if data.get("user_site") else None,
        )
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise InterpreterError(f"{what}: did not answer like a Python 3 interpreter") from None
    return answer
