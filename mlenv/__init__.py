"""mlenv: lock, build and verify ML environments so production runs exactly what was tested."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlenv")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
