"""Policy findings: the production rules an image breaks, whoever built it and whatever its lock says.

Read from the image alone (its config and its files), so they apply to images mlenv did not build. A
finding is not a drift: `mlenv verify` reports them in their own section, and fails on them only with
`--policy fail`.

Secret-like files and training data are looked for where an application's files live: under the
image's WorkingDir, /root and /home. Elsewhere the same names are the system's own (a CA bundle
certifi ships as cacert.pem, /etc/ssl's keys of a package) and no application copy put them there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from mlenv.model.facts import ConfigFact, EnvFacts, PthFact
from mlenv.model.ignore import secret_like
from mlenv.model.labels import LABEL_BASE_DIGEST, LABEL_BASE_NAME
from mlenv.model.report import Finding
from mlenv.observe.fs.rootfs import ImageFS
from mlenv.verify.credentials import credential

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
SEARCHED = ("/root", "/home")
# setuptools' distutils-precedence.pth, as its releases ship it (python3-setuptools in Debian's base
# images among them): the one import line nearly every Python image carries. It only switches which
# distutils is imported; the module it calls is a file the base or the lock accounts for like any other.
_DISTUTILS_SHIM = frozenset(
    {
        "2638ce9e2500e572a5e0de7faed6661eb569d1b696fcba07b0dd223da5f5d224",  # default 'local' (60+)
        "7ea7ffef3fe2a117ee12c68ed6553617f0d7fd2f0590257c25c484959a3b7373",  # default 'stdlib' (49-59)
    }
)


def runs_as_root(user: str) -> bool:
    name = user.partition(":")[0]
    return name in ("", "0", "root")


def config_findings(config: ConfigFact | None) -> Iterator[Finding]:
    if config is None:
        return
    if runs_as_root(config.user):
        said = config.user or "unset"
        yield Finding(rule="root-user", subject="User", detail=f"runs as root (User {said})")
    if config.healthcheck is None or config.healthcheck.test[:1] == ("NONE",):
        yield Finding(rule="no-healthcheck", subject="Healthcheck", detail="no HEALTHCHECK")
    labels = dict(config.labels)
    name, digest = labels.get(LABEL_BASE_NAME), labels.get(LABEL_BASE_DIGEST)
    if not (digest and _DIGEST.fullmatch(digest)) and not (name and "@sha256:" in name):
        said = f"base {name}" if name else f"no {LABEL_BASE_NAME} label"
        yield Finding(rule="unpinned-base", subject="Labels", detail=f"base not pinned by digest ({said})")
    for field, pairs in (("Env", config.env), ("Labels", config.labels)):
        for key, value in pairs:
            what = credential(key, value)
            if what is not None:
                yield Finding(rule="credentials", subject=f"{field} {key}", detail=what)


def file_findings(paths: Iterable[str]) -> Iterator[Finding]:
    """Secret-like files and training data among `paths` (absolute), one finding for each directory
    of training data (not one per file in it)."""
    seen: set[str] = set()
    for path in sorted(paths):
        match = secret_like(path)
        if match is None:
            continue
        where = "/" + match.path
        if match.kind == "data":
            if where not in seen:
                seen.add(where)
                yield Finding(rule="training-data", subject=where, detail=f"training data ({match.pattern})")
        else:
            yield Finding(rule="secret-file", subject=path, detail=f"a secret-like file ({match.pattern})")


def pth_findings(pth_files: Iterable[PthFact]) -> Iterator[Finding]:
    """A .pth file with an `import` line, on any site directory: site.py runs that line at every
    interpreter start, before any of the application's code. Except setuptools' distutils shim."""
    for pth in sorted(pth_files, key=lambda p: p.path):
        if pth.runs_code and pth.sha256 not in _DISTUTILS_SHIM:
            yield Finding(
                rule="pth-import",
                subject=pth.path,
                detail=f"runs code at every interpreter start (an import line, site {pth.site})",
            )


def searched_roots(config: ConfigFact | None) -> tuple[str, ...]:
    workdir = config.working_dir if config is not None else ""
    roots = {*SEARCHED, *([workdir] if workdir not in ("", "/") else [])}
    return tuple(sorted(roots))


def image_findings(facts: EnvFacts, fs: ImageFS) -> tuple[Finding, ...]:
    """Every policy finding of an image: its config, its .pth files that run code, and the files under
    the searched roots."""
    paths: list[str] = []
    for root in searched_roots(facts.config):
        if fs.is_dir(root):
            paths += fs.file_paths(root)
    return (*config_findings(facts.config), *pth_findings(facts.pth_files), *file_findings(paths))


def finding_line(finding: Finding) -> str:
    return f"{finding.rule}: {finding.subject}: {finding.detail}"
