"""Small synthetic apt worlds for the resolver's unit tests: Packages and dpkg status as text.

Every world is also handed to the real apt-get of this machine (a `file:` repository, the status
file, `apt-get -s install`), and the closure must be the one apt computes: the unit tests check
the resolver against apt itself, not against what we believe apt does.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlenv.model.debian import PackagesIndex, SourceEntry, Suite, parse_packages
from mlenv.model.lock import AptSource
from mlenv.resolve.apt import AptBaseState, AptResolution, installed_records, resolve_apt

DATE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def packages(text: str) -> str:
    """Fill in what every index stanza has (Architecture, Filename, Size, SHA256) unless given."""
    stanzas = []
    for raw in textwrap.dedent(text).strip().split("\n\n"):
        if not raw.strip():
            continue
        fields = dict(line.split(": ", 1) for line in raw.strip().splitlines())
        name, version = fields["Package"], fields["Version"]
        fields.setdefault("Architecture", "amd64")
        fields.setdefault("Priority", "optional")
        digest = hashlib.sha256(f"{name}_{version}_{fields['Architecture']}".encode()).hexdigest()
        fields.setdefault(
            "Filename", f"pool/main/{name[0]}/{name}/{name}_{version}_{fields['Architecture']}.deb"
        )
        fields.setdefault("Size", str(1000 + len(name)))
        fields.setdefault("SHA256", digest)
        stanzas.append("\n".join(f"{k}: {v}" for k, v in fields.items()))
    return "\n\n".join(stanzas) + "\n"


@dataclass(frozen=True)
class World:
    name: str
    text: str  # the Packages text as written by packages()
    not_automatic: bool


WORLDS: dict[int, World] = {}  # id(Suite) -> what it was made from, for the apt-get cross-check


def suite(text: str, *, name: str = "bookworm", not_automatic: bool = False, arch: str = "amd64") -> Suite:
    made = _suite(text, name=name, not_automatic=not_automatic, arch=arch)
    WORLDS[id(made)] = World(
        name=name, text=packages(text) if text.strip() else "", not_automatic=not_automatic
    )
    return made


def _suite(text: str, *, name: str, not_automatic: bool, arch: str) -> Suite:
    entry = SourceEntry(uri="http://deb.debian.org/debian", suite=name, components=("main",))
    index = PackagesIndex(
        url=f"http://deb.debian.org/debian/dists/{name}/main/binary-{arch}/Packages",
        component="main",
        architecture=arch,
        sha256="0" * 64,
        records=parse_packages(packages(text).encode()),
    )
    source = AptSource(mirror=entry.uri, suite=name, components=("main",))
    return Suite(
        entry=entry,
        source=source,
        date=DATE,
        not_automatic=not_automatic,
        indexes=(index,),
    )


def status(text: str) -> str:
    """dpkg status stanzas; `Status: install ok installed` and Architecture: amd64 unless given."""
    stanzas = []
    for raw in textwrap.dedent(text).strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in raw.strip().splitlines())
        fields.setdefault("Status", "install ok installed")
        fields.setdefault("Architecture", "amd64")
        stanzas.append("\n".join(f"{k}: {v}" for k, v in fields.items()))
    return "\n\n".join(stanzas) + "\n"


DPKG = """
Package: dpkg
Version: 1.21.22
Essential: yes
Priority: required
"""


def base(installed: str = "", *, foreign: Sequence[str] = ()) -> AptBaseState:
    text = status(DPKG + ("\n\n" + textwrap.dedent(installed).strip() if installed.strip() else ""))
    return AptBaseState(
        architecture="amd64", foreign_architectures=tuple(foreign), installed=installed_records(text.encode())
    )


def resolve(
    requests: Sequence[str], installed: str, *indexes: str | Suite, foreign: Sequence[str] = ()
) -> AptResolution:
    """Our resolution; when apt-get is here, checked against apt's for the same world first."""
    suites = [s if isinstance(s, Suite) else suite(s) for s in indexes]
    try:
        ours: AptResolution | Exception = resolve_apt(requests, base(installed, foreign=foreign), suites)
    except Exception as error:  # compared with apt's outcome, then re-raised
        ours = error
    apt = apt_get_simulate(requests, installed, [WORLDS[id(s)] for s in suites], foreign)
    if apt is not None:
        if isinstance(ours, Exception):
            # We refuse what apt does only by removing base packages; otherwise apt fails too.
            assert apt.failed or apt.removes, f"apt installs {sorted(apt.installs)} where we said: {ours}"
        else:
            assert not apt.failed, f"apt fails where we resolved: {apt.output}"
            assert {(p.name, p.version, p.architecture) for p in ours.pins} == apt.installs
    if isinstance(ours, Exception):
        raise ours
    return ours


def closure(
    requests: Sequence[str], installed: str, *indexes: str | Suite, foreign: Sequence[str] = ()
) -> dict[str, str]:
    """name (with :arch when not native) -> version of everything apt would install or upgrade."""
    result = resolve(requests, installed, *indexes, foreign=foreign)
    return {
        (p.name if p.architecture in ("amd64", "all") else f"{p.name}:{p.architecture}"): p.version
        for p in result.pins
    }


# --------------------------------------------------------------------------- apt-get itself


@dataclass(frozen=True)
class AptOutcome:
    installs: set[tuple[str, str, str]]
    removes: bool
    failed: bool
    output: str


_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) .*\[(\S+)\]\)", re.MULTILINE)


def apt_get_simulate(
    requests: Sequence[str], installed: str, worlds: Sequence[World], foreign: Sequence[str]
) -> AptOutcome | None:
    """`apt-get -s install --no-install-recommends` on this world; None when apt-get is not here."""
    if shutil.which("apt-get") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="mlenv-apt-world-") as tmp:
        root = Path(tmp)
        for sub in ("lists/partial", "cache/archives/partial", "empty", "log"):
            (root / sub).mkdir(parents=True)
        (root / "status").write_text(
            status(DPKG + ("\n\n" + textwrap.dedent(installed).strip() if installed.strip() else ""))
        )
        (root / "apt.conf").write_text("")
        lines = []
        for number, world in enumerate(worlds):
            repo = root / f"repo{number}"
            repo.mkdir()
            (repo / "Packages").write_text(world.text)
            release = f"Archive: {world.name}\nCodename: {world.name}\n"
            if world.not_automatic:
                release += "NotAutomatic: yes\nButAutomaticUpgrades: yes\n"
            (repo / "Release").write_text(release)
            lines.append(f"deb [trusted=yes] file:{repo} ./")
        (root / "sources.list").write_text("\n".join(lines) + "\n")
        options = [
            f"Dir::State={root}",
            f"Dir::State::status={root}/status",
            f"Dir::State::Lists={root}/lists",
            f"Dir::Cache={root}/cache",
            f"Dir::Etc::SourceList={root}/sources.list",
            f"Dir::Etc::SourceParts={root}/empty",
            f"Dir::Etc::Preferences={root}/empty/none",
            f"Dir::Etc::PreferencesParts={root}/empty",
            f"Dir::Etc::Parts={root}/empty",
            f"Dir::Log={root}/log",
            "Debug::NoLocking=1",
            "APT::Architecture=amd64",
            "APT::Architectures::=amd64",
            *(f"APT::Architectures::={a}" for a in foreign),
        ]
        args = [arg for option in options for arg in ("-o", option)]
        env = {"APT_CONFIG": str(root / "apt.conf"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
        subprocess.run(["apt-get", *args, "update"], capture_output=True, text=True, env=env, check=True)
        run = subprocess.run(
            ["apt-get", *args, "-s", "install", "--no-install-recommends", *requests],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    output = run.stdout + run.stderr
    installs = {(name.split(":")[0], version, arch) for name, version, arch in _INST.findall(run.stdout)}
    return AptOutcome(
        installs=installs, removes="\nRemv " in "\n" + run.stdout, failed=run.returncode != 0, output=output
    )
