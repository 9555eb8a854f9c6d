"""The outcome of a comparison: typed drifts, one per difference, grouped by layer.

A Drift holds its parts as fields (the package, its architecture, the file inside a distribution,
the two values), so nothing downstream has to take a message apart to find what drifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Layer = Literal[
    "base",
    "os",
    "apt",
    "python-interpreter",
    "python",
    "python-files",
    "cuda",
    "models",
    "labels",
    "files",
    "config",
]
# In the order a report lists them: from the bottom of the image up.
LAYERS: tuple[Layer, ...] = get_args(Layer)
Kind = Literal[
    "missing",  # the lock has it, the image does not
    "extra",  # the image has it, the lock does not
    "version",  # both have it, with other values (a version, an os field, a label's value)
    "arch",  # an apt package the image has for another architecture than the lock's
    "modified",  # a file whose content is not what the lock (or a RECORD) says
    "deleted",  # a file a distribution's RECORD lists that is gone
    "layers",  # the base's layers differ from the locked base's
    # files: a path above the base that the lock does not explain, or explains otherwise
    "shadowed",  # an upper layer rewrote a base file (or a base directory's mode or owner)
    "whiteout",  # an upper layer deleted a base file
    "kind",  # a path of another type (a file where a symlink belongs, ...)
    "link",  # a symlink with another target
    "pyc",  # a .pyc that is not the checked-hash byte code of its own source
    "reinstalled",  # a wheel installed again by a later layer (its byte code and records rewritten)
    "unverified",  # what the lock's expectation needs is not at hand (the project's app tree)
    "changed",  # a config field (User, Cmd, an Env variable, ...) with another value than the lock's
    "producer",  # a model its environment cannot load (written by another version, an unsafe pickle)
]
KINDS: tuple[Kind, ...] = get_args(Kind)


@dataclass(frozen=True, kw_only=True)
class Drift:
    layer: Layer
    kind: Kind
    # What drifted: a package or distribution name, a path in the image, a label key, an os field
    # ("os-version"), which base layer ("layer 2 of 3", see base_layer_name), or a config field
    # ("User", "Env PATH", "Labels a.b", "ExposedPorts 8000/tcp").
    subject: str
    expected: str | None = None  # the lock's value: a version, digest or sha256; None when it has none
    actual: str | None = None  # the image's value; None when the image has none
    # apt: the package's architecture (the lock's; for an extra package, the image's). Packages are
    # keyed by name and architecture, so this is part of what drifted.
    architecture: str | None = None
    actual_architecture: str | None = None  # kind "arch": the architecture the image has instead
    file: str | None = None  # python-files: the file of distribution `subject`, relative to its site


def base_layer_name(index: int, count: int) -> str:
    """`layer 2 of 3` (1-based): how a drift and a page both name one layer of the base."""
    return f"layer {index} of {count}"


Rule = Literal[
    "root-user",  # the image runs as root (User empty, 0 or root)
    "no-healthcheck",  # no HEALTHCHECK, or HEALTHCHECK NONE
    "unpinned-base",  # the image does not name its base by digest (org.opencontainers.image.base.*)
    "secret-file",  # a secret-like file (.env, *.pem, *.key, id_rsa*, config/secrets.yaml, ...)
    "training-data",  # data/raw or data/processed in the image
    "credentials",  # a credential (URL password, cloud key, *_TOKEN value, ...) in an Env value or a label
    "pth-import",  # a .pth file with an import line: code run at every interpreter start
    "missing-library",  # an ELF object of site-packages needs a shared library the loader finds nowhere
]
RULES: tuple[Rule, ...] = get_args(Rule)


@dataclass(frozen=True, kw_only=True)
class Finding:
    """A policy finding: a production rule the image breaks. Not a drift from the lock: an image can
    reproduce its lock exactly and still run as root."""

    rule: Rule
    subject: str  # what breaks it: a path in the image, an Env variable or label name, a config field
    detail: str  # one phrase saying how, never a secret's value


@dataclass(frozen=True, kw_only=True)
class Report:
    subject: str  # what was checked, e.g. the image reference
    layers: tuple[Layer, ...]  # every layer that was compared, drift or not
    drifts: tuple[Drift, ...] = ()
    findings: tuple[Finding, ...] = ()  # policy findings; they do not make the report drift

    @property
    def ok(self) -> bool:
        return not self.drifts
