"""Which globals a pickle may import that run code (or reach the system) when it is loaded.

A pickle calls what it imports (REDUCE, NEWOBJ, INST, BUILD's __setstate__), so a global is unsafe
when calling it with arguments from the file can execute code, spawn a process, open a file or a
socket, load another pickle, or reach attributes the file could not name otherwise. Ordinary model
files import classes and a few reconstructors (`copyreg._reconstructor`, `_codecs.encode`,
`numpy.core.multiarray._reconstruct`, `joblib.numpy_pickle.NumpyArrayWrapper`); those stay safe.

The judgement is a list, kept here rather than taken from a general pickle analyser: it is applied to
the globals the streaming walk collects (joblib's in-band arrays make such files unreadable to a
generic opcode walker), and a denylist over module prefixes covers a whole family (subprocess.*,
os.*) where an allowlist would reject every estimator library's classes.
"""

from __future__ import annotations

import re

# Every global of these modules (and their submodules) is unsafe: each exposes process, file, network,
# interpreter or code-loading control through ordinary calls.
UNSAFE_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "_posixsubprocess",
        "_winapi",
        "msvcrt",
        "subprocess",
        "commands",  # Python 2's subprocess
        "popen2",
        "pty",
        "sys",
        "importlib",
        "imp",
        "zipimport",
        "pkgutil",  # resolve_name imports any module
        "runpy",
        "code",
        "codeop",
        "shutil",
        "socket",
        "_socket",
        "socketserver",
        "ssl",
        "asyncio",  # create_subprocess_exec, open_connection
        "multiprocessing",
        "ctypes",
        "_ctypes",
        "cffi",
        "pickle",
        "_pickle",
        "cPickle",
        "pickletools",
        "marshal",
        "shelve",
        "dill",  # _create_code / _create_function: code objects from the file
        "cloudpickle",
        "webbrowser",
        "antigravity",  # opens a browser on import
        "http",
        "urllib",
        "urllib2",
        "httplib",
        "ftplib",
        "smtplib",
        "poplib",
        "imaplib",
        "telnetlib",
        "xmlrpc",
        "requests",
        "pdb",
        "bdb",
        "trace",
        "timeit",  # timeit.timeit runs a string
        "profile",
        "cProfile",
        "pydoc",  # pipepager runs a shell command
        "platform",  # popen on old Pythons, and it runs `uname`
        "venv",
        "ensurepip",
        "pip",
        "setuptools",
        "distutils",
        "site",
        "tempfile",  # creates files
        "fileinput",
        "linecache",  # reads any file
        "logging.config",  # listen() and dictConfig() import and call factories named in data
        "gc",
        "inspect",
        "ast",  # literal_eval is safe but compile paths are not; no model needs ast
        "yaml",  # yaml.load / unsafe_load construct arbitrary objects
        "torch.hub",
        "torch.jit",
        "torch.package",
        "numpy.f2py",
        "numpy.distutils",
        "numpy.testing",  # numpy.testing._private.utils.runstring execs a string
        "pandas.io",  # read_pickle, read_csv(url): files, the network, other pickles
        "pandas.core.computation",  # eval and query evaluate expression strings
        "nose",
        "IPython",
    }
)

# Single globals of otherwise ordinary modules.
UNSAFE_NAMES = frozenset(
    {
        "builtins.eval",
        "builtins.exec",
        "builtins.execfile",
        "builtins.compile",
        "builtins.open",
        "builtins.file",
        "builtins.__import__",
        "builtins.getattr",
        "builtins.setattr",
        "builtins.delattr",
        "builtins.globals",
        "builtins.locals",
        "builtins.vars",
        "builtins.input",
        "builtins.raw_input",
        "builtins.breakpoint",
        "builtins.help",
        "builtins.exit",
        "builtins.quit",
        "builtins.apply",
        "builtins.reload",
        "operator.attrgetter",
        "operator.methodcaller",
        "operator.call",
        "_operator.attrgetter",
        "_operator.methodcaller",
        "_operator.call",
        "types.FunctionType",
        "types.CodeType",
        "types.LambdaType",
        "types.MethodType",
        "types.ModuleType",
        "codecs.open",
        "io.open",
        "io.open_code",
        "io.FileIO",
        "_io.open",
        "_io.open_code",
        "_io.FileIO",
        "uuid._get_command_stdout",
        "numpy.load",
        "numpy.loads",
        "numpy.fromfile",
        "numpy.lib.npyio.load",
        "numpy.lib.format.read_array",
        "joblib.load",
        "joblib.numpy_pickle.load",
        "pandas.eval",  # evaluates an expression string
        "torch.load",
        "torch.serialization.load",
        "keras.models.load_model",
        "tensorflow.keras.models.load_model",
    }
)

# Python 2 spells builtins `__builtin__`; pickle maps it on load (fix_imports), so it is the same module.
_ALIASES = {"__builtin__": "builtins", "exceptions": "builtins"}
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# Dunder attributes reached through a dotted name (object.__subclasses__, f.__globals__) walk from any
# class to every loaded module; pickle resolves dotted names attribute by attribute.
_DUNDER = re.compile(r"(^|\.)__(?!newobj__|newobj_ex__|main__)[A-Za-z0-9_]+__($|\.)")


def is_unsafe(module: str, name: str) -> bool:
    """Whether importing `module`.`name` from a pickle can run code or reach the system when loaded."""
    if not (_DOTTED.fullmatch(module) and _DOTTED.fullmatch(name)):
        return True  # not a Python name at all: a crafted stream, never an estimator
    module = _ALIASES.get(module, module)
    parts = module.split(".")
    if any(".".join(parts[:i]) in UNSAFE_MODULES for i in range(1, len(parts) + 1)):
        return True
    # A dotted name is an attribute path: builtins.getattr spelled `object.__getattribute__`, or a
    # method such as `Path.write_text` reached through its class; each prefix is judged as a name.
    pieces = name.split(".")
    if len(pieces) > 1 and module == "pathlib":
        return True  # Path.write_text, Path.unlink: a method reached through the class
    if parts[0] == "pandas" and pieces[-1].startswith(("read_", "eval", "query")):
        return True  # pandas.read_pickle, pandas.read_csv (a URL), DataFrame.eval
    for i in range(1, len(pieces) + 1):
        if f"{module}.{'.'.join(pieces[:i])}" in UNSAFE_NAMES:
            return True
    return bool(_DUNDER.search(name))
