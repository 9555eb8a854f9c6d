"""Probes put together: a filesystem (and the image config, when there is one) → EnvFacts."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mlenv.errors import ImageError, MlenvError
from mlenv.model.facts import ArtifactFact, ConfigFact, EnvFacts, argv_of, healthcheck_of
from mlenv.model.modelfacts import ModelFacts
from mlenv.observe.fs.rootfs import ImageFS, Interest, still_needed
from mlenv.observe.limits import MAX_KEPT_FILE
from mlenv.observe.models import read_model
from mlenv.observe.probes import cuda, dpkg, libc, osrelease, python
from mlenv.observe.stream.decompress import StreamError

# Paths whose content the probes read, plus apt's configuration and keyrings for callers that
# want to know where an image's packages come from.
_PATTERNS = (
    *osrelease.INTEREST,
    *dpkg.INTEREST,
    *libc.INTEREST,
    *python.INTEREST,
    *cuda.INTEREST,
    r"/etc/apt/.*",
    r"/usr/share/keyrings/[^/]+",
    r"/etc/ld\.so\.conf(?:\.d/[^/]+)?",  # the loader's directories (verify.native)
)
_INTEREST = re.compile("(?:" + "|".join(_PATTERNS) + ")")


# Called for every file of every layer: a check of the file name alone rejects nearly all of them
# before the full pattern (about 13 µs a path) is tried.
_NAMES = re.compile(
    r"os-release|debian_version|status|libc\.so\.6|libc-[0-9.]+\.so|python[0-9]+\.[0-9]+t?"
    r"|libpython.*|patchlevel\.h|pyvenv\.cfg|METADATA|RECORD|INSTALLER|PKG-INFO|.*\.egg-info|.*\.pth"
    r"|version\.(?:json|txt)|cudnn_version.*\.h"
)
_PREFIXES = ("/etc/apt/", "/usr/share/keyrings/", "/var/lib/dpkg/status.d/", "/etc/ld.so.conf")


def probe_interest(path: str) -> bool:
    """Whether the probes will read this file's content (an absolute path inside the image)."""
    if _NAMES.fullmatch(path, path.rfind("/") + 1) is None and not path.startswith(_PREFIXES):
        return False
    return _INTEREST.fullmatch(path) is not None


def combine(*predicates: Interest | None) -> Interest:
    return _Combined([p for p in predicates if p is not None])


class _Combined:
    """Any of the predicates; a file's content stays needed once hashed unless every predicate that
    wants it lets go of it (rootfs.still_needed)."""

    def __init__(self, chosen: list[Interest]) -> None:
        self.chosen = chosen

    def __call__(self, path: str) -> bool:
        return any(predicate(path) for predicate in self.chosen)

    def needed(self, path: str, digest: bytes) -> bool:
        return any(p(path) and still_needed(p, path.removeprefix("/"), digest) for p in self.chosen)


# The types the image config's fields must have for the observer to read them (the OCI image spec's).
_INNER_TYPES: dict[str, tuple[type, ...]] = {
    "Env": (list,),
    "Labels": (dict,),
    "Cmd": (list, str),
    "Entrypoint": (list, str),
    "ExposedPorts": (dict,),
    "Volumes": (dict,),
    "Healthcheck": (dict,),
    "User": (str,),
    "WorkingDir": (str,),
    "StopSignal": (str,),
}
_HEALTH_NUMBERS = ("Interval", "Timeout", "StartPeriod", "Retries")


def config_problem(config: object) -> str | None:
    """What makes an image config unreadable (a field of the wrong JSON type), or None. Checked once
    when an image is loaded, so no reader of the config meets a list where an object belongs."""
    if not isinstance(config, dict):
        return "the image config is not a JSON object"
    rootfs = config.get("rootfs")
    if rootfs is not None and not isinstance(rootfs, dict):
        return "the image config's rootfs is not an object"
    diff_ids = (rootfs or {}).get("diff_ids")
    if diff_ids is not None and not (
        isinstance(diff_ids, list) and all(isinstance(d, str) for d in diff_ids)
    ):
        return "the image config's rootfs.diff_ids is not a list of strings"
    for key in ("architecture", "os"):
        if config.get(key) is not None and not isinstance(config[key], str):
            return f"the image config's {key} is not a string"
    if config.get("history") is not None and not isinstance(config["history"], list):
        return "the image config's history is not a list"
    inner = config.get("config")
    if inner is None:
        return None
    if not isinstance(inner, dict):
        return "the image config's config is not an object"
    for key, types in _INNER_TYPES.items():
        if inner.get(key) is not None and not isinstance(inner[key], types):
            return f"the image config's config.{key} has the wrong type ({type(inner[key]).__name__})"
    if not all(isinstance(item, str) for item in inner.get("Env") or ()):
        return "the image config's config.Env holds a value that is not a string"
    check = inner.get("Healthcheck") or {}
    if check.get("Test") is not None and not isinstance(check["Test"], list):
        return "the image config's config.Healthcheck.Test is not a list"
    for key in _HEALTH_NUMBERS:
        if check.get(key) is not None and (not isinstance(check[key], int) or isinstance(check[key], bool)):
            return f"the image config's config.Healthcheck.{key} is not a number"
    return None


def config_env(config: Mapping[str, Any] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in ((config or {}).get("config") or {}).get("Env") or ():
        key, _, value = str(item).partition("=")
        env[key] = value
    return env


def config_labels(config: Mapping[str, Any] | None) -> dict[str, str]:
    labels = ((config or {}).get("config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def config_fact(config: Mapping[str, Any] | None) -> ConfigFact | None:
    """The run-time fields of an OCI (or docker) image config, every one of them; None without a config."""
    if config is None:
        return None
    inner = config.get("config") or {}
    return ConfigFact(
        user=str(inner.get("User") or ""),
        cmd=argv_of(inner.get("Cmd")),
        entrypoint=argv_of(inner.get("Entrypoint")),
        env=tuple(sorted(config_env(config).items())),
        working_dir=str(inner.get("WorkingDir") or ""),
        exposed_ports=tuple(sorted(str(p) for p in inner.get("ExposedPorts") or {})),
        healthcheck=healthcheck_of(inner),
        volumes=tuple(sorted(str(v) for v in inner.get("Volumes") or {})),
        stop_signal=inner.get("StopSignal") or None,
        labels=tuple(sorted(config_labels(config).items())),
        os=config.get("os"),
        architecture=config.get("architecture"),
    )


def observe_tree(
    fs: ImageFS,
    config: Mapping[str, Any] | None = None,
    *,
    artifacts: Iterable[str] = (),
    check_files: bool = True,
    where: object = "the image tree",
) -> EnvFacts:
    """What the filesystem contains. `config` is an OCI image config (labels, env, architecture,
    diff_ids); `artifacts` are paths whose sha256 to report (models baked into the image).
    `check_files=False` skips comparing RECORD hashes with the files. A text file the probes cannot
    parse (or that crosses a limit) is an ImageError starting with `where` and naming the file."""
    try:
        return _observe(fs, config, artifacts=artifacts, check_files=check_files)
    except StreamError as error:
        raise ImageError(f"{where}: {error}") from None


def _observe(
    fs: ImageFS, config: Mapping[str, Any] | None, *, artifacts: Iterable[str], check_files: bool
) -> EnvFacts:
    env = config_env(config)
    os_release = osrelease.read_os_release(fs)
    apt = dpkg.read_dpkg(fs)
    path_dirs = [d for d in env.get("PATH", "").split(":") if d.startswith("/")]
    installs = python.find_interpreters(fs, path_dirs=path_dirs, apt=apt)
    venvs = python.find_venvs(fs, installs)
    python_path = [d for d in env.get("PYTHONPATH", "").split(":") if d.startswith("/")]
    sites = python.site_directories(fs, installs, venvs, python_path=python_path)
    dists = [dist for site in sites for dist in python.read_dists(fs, site, check_files=check_files)]
    found_artifacts = []
    for path in sorted(set(artifacts)):
        if fs.is_file(path):
            found_artifacts.append(
                ArtifactFact(path=path, sha256=fs.sha256(path), model=_model_facts(fs, path))
            )
    rootfs = (config or {}).get("rootfs") or {}
    return EnvFacts(
        layer_diff_ids=tuple(rootfs.get("diff_ids") or ()),
        os_id=os_release.get("ID"),
        os_version=os_release.get("VERSION_ID"),
        architecture=(config or {}).get("architecture") or _dpkg_architecture(apt),
        glibc=libc.glibc_version(fs, apt),
        interpreters=python.interpreter_facts(fs, installs, venvs),
        apt=apt,
        python_dists=tuple(sorted(dists, key=lambda d: (d.site, d.name, d.version))),
        cuda=cuda.cuda_components(fs, env, dists, apt),
        artifacts=tuple(found_artifacts),
        labels=tuple(sorted(config_labels(config).items())),
        env=tuple(sorted(env.items())),
        config=config_fact(config),
        pth_files=python.pth_files(fs, sites),
    )


def _model_facts(fs: ImageFS, path: str) -> ModelFacts | None:
    """What the model file at `path` says about its producer, read by the reader the lock used (never
    unpickled). None when its content was not kept (the caller did not ask for it, or it is larger
    than a kept file may be). A file the reader refuses is a fact too: its format is "unreadable"."""
    if fs.size(path) > MAX_KEPT_FILE:
        return None
    try:
        data = fs.read_bytes(path)
    except LookupError:
        return None
    try:
        return read_model(io.BytesIO(data), name=path)
    except MlenvError as error:
        return ModelFacts(format="unreadable", note=error.message)


def _dpkg_architecture(apt: Iterable[dpkg.AptFact]) -> str | None:
    # Without an image config (a directory tree), the C library's package says what the tree runs on.
    for fact in apt:
        if fact.name == "libc6" and fact.architecture != "all":
            return fact.architecture
    return None
