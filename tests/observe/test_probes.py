"""Probes over synthetic images: os-release, dpkg, glibc, interpreters, venvs, dists + RECORD, CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlenv.model.facts import AptFact, CudaComponent, InterpreterFact
from mlenv.observe import observe_tree
from mlenv.observe.facts import probe_interest
from mlenv.observe.fs.rootfs import LayeredFS, index_layer
from mlenv.observe.probes.osrelease import parse_os_release
from mlenv.observe.probes.python import parse_record, urlsafe_digest, version_in_binary

from .layers import dist_info, image_config, layer_tar

REPO = Path(__file__).resolve().parents[2]

STATUS = b"""Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u7
Description: GNU C Library

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: python3.11-minimal
Status: install ok installed
Architecture: amd64
Version: 3.11.2-6+deb12u5

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1
"""

LIBC = (
    b"\x7fELF...\x00GNU C Library (Debian GLIBC 2.36-9+deb12u7) stable release version 2.36.\nCopyright\x00"
)
DEBIAN_PYTHON = b"\x7fELF\x00pymalloc\x003.11.2\x00strict\x00<prefix>/lib/pythonX.X\x00"
SLIM_LIBPYTHON = b"\x7fELF\x00/usr/src/python/Python-3.12.4\x00getbuildinfo.c\x00"
SITE = "/usr/local/lib/python3.12/site-packages"
VENV_SITE = "/opt/venv/lib/python3.11/site-packages"


def build(*layers: list[tuple]) -> LayeredFS:
    return LayeredFS([index_layer([layer_tar(entries)], interest=probe_interest) for entries in layers])


BASE = [
    ("dir", "usr"),
    ("dir", "usr/lib"),
    ("symlink", "lib", "usr/lib"),
    ("symlink", "bin", "usr/bin"),
    (
        "file",
        "usr/lib/os-release",
        b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
    ),
    ("dir", "etc"),
    ("symlink", "etc/os-release", "../usr/lib/os-release"),
    ("file", "var/lib/dpkg/status", STATUS),
    ("file", "usr/lib/x86_64-linux-gnu/libc.so.6", LIBC, 0o755),
    ("file", "usr/bin/python3.11", DEBIAN_PYTHON, 0o755),
    ("symlink", "usr/bin/python3", "python3.11"),
]
SLIM = [
    ("file", "usr/local/bin/python3.12", b"\x7fELF tiny launcher\x00", 0o755),
    ("symlink", "usr/local/bin/python3", "python3.12"),
    ("symlink", "usr/local/bin/python", "python3"),
    ("file", "usr/local/lib/libpython3.12.so.1.0", SLIM_LIBPYTHON, 0o755),
    *dist_info(SITE.lstrip("/"), "pip", "24.0", {"pip/__init__.py": b"__version__ = '24.0'\n"}),
]
VENV = [
    (
        "file",
        "opt/venv/pyvenv.cfg",
        b"home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n",
    ),
    ("symlink", "opt/venv/bin/python", "/usr/bin/python3.11"),
    ("symlink", "opt/venv/bin/python3", "python"),
    *dist_info(
        VENV_SITE.lstrip("/"),
        "Scikit_Learn",
        "1.4.2",
        {
            "sklearn/__init__.py": b"x = 1\n",
            "sklearn/base.py": b"base\n",
            "sklearn/__pycache__/base.cpython-311.pyc": b"pyc",
            "../../../bin/skl": b"#!/opt/venv/bin/python\n",
        },
    ),
    (
        "file",
        f"{VENV_SITE.lstrip('/')}/six-1.16.0.egg-info",
        b"Metadata-Version: 1.1\nName: six\nVersion: 1.16.0\n",
    ),
]


def test_os_release_dpkg_and_glibc() -> None:
    facts = observe_tree(build(BASE))
    assert (facts.os_id, facts.os_version, facts.glibc, facts.architecture) == (
        "debian",
        "12",
        "2.36",
        "amd64",
    )
    assert facts.apt == (
        AptFact(name="libc6", version="2.36-9+deb12u7", architecture="amd64"),
        AptFact(name="python3.11-minimal", version="3.11.2-6+deb12u5", architecture="amd64"),
        AptFact(name="tzdata", version="2024a-0+deb12u1", architecture="all"),
    )


# Quoting the observer (shlex) and the apt resolver (quotes stripped, escapes kept) once read differently.
QUOTED_OS_RELEASE = r"""# os-release(5): shell quoting
  # an indented comment
NAME="Foo \"Bar\" Linux"
ID='debian'
VERSION_ID="12"<blanks>
PRETTY_NAME="costs \$5, \`x\`, a \\ and a \n"
VERSION_CODENAME=book\ worm<blanks>
ID_LIKE="a"'b'c
VARIANT='lit\eral "x" \$'
EMPTY=
BUILD_ID=1
not a line
BUILD_ID=2
""".replace("<blanks>", " \t ")  # trailing blanks after a quoted and after an unquoted value


def test_os_release_values_follow_shell_quoting() -> None:
    assert parse_os_release(QUOTED_OS_RELEASE) == {
        "NAME": 'Foo "Bar" Linux',
        "ID": "debian",
        "VERSION_ID": "12",
        "PRETTY_NAME": "costs $5, `x`, a \\ and a \\n",  # \n is not an escape inside double quotes
        "VERSION_CODENAME": "book worm",
        "ID_LIKE": "abc",
        "VARIANT": 'lit\\eral "x" \\$',  # single quotes are literal
        "EMPTY": "",
        "BUILD_ID": "2",  # the later assignment wins, as in the shell
    }


def test_distroless_status_d() -> None:
    fs = build(
        [
            (
                "file",
                "var/lib/dpkg/status.d/base",
                b"Package: base-files\nVersion: 12.4\nArchitecture: amd64\n",
            ),
            ("file", "var/lib/dpkg/status.d/base.md5sums", b"abc  etc/x\n"),
            (
                "file",
                "var/lib/dpkg/status.d/libc6",
                b"Package: libc6\nVersion: 2.36-9\nArchitecture: amd64\n",
            ),
        ]
    )
    facts = observe_tree(fs)
    assert [(p.name, p.version) for p in facts.apt] == [("base-files", "12.4"), ("libc6", "2.36-9")]
    assert facts.glibc == "2.36"  # no libc file: from the package


def test_interpreters_debian_slim_and_venv() -> None:
    facts = observe_tree(build(BASE, SLIM, VENV))
    assert facts.interpreters == (
        InterpreterFact(path="/opt/venv/bin/python", version="3.11.2", sites=(VENV_SITE,)),
        InterpreterFact(path="/opt/venv/bin/python3", version="3.11.2", sites=(VENV_SITE,)),
        # Debian's python3 without its dist-packages directory in this tree: no site directory to name.
        InterpreterFact(path="/usr/bin/python3", version="3.11.2"),
        InterpreterFact(path="/usr/bin/python3.11", version="3.11.2"),
        InterpreterFact(path="/usr/local/bin/python", version="3.12.4", sites=(SITE,)),
        InterpreterFact(path="/usr/local/bin/python3", version="3.12.4", sites=(SITE,)),
        InterpreterFact(path="/usr/local/bin/python3.12", version="3.12.4", sites=(SITE,)),
    )


def test_version_in_binary_takes_only_the_named_series() -> None:
    assert version_in_binary(b"\x003.10.1\x00x\x003.11.9\x00", "3.11") == "3.11.9"
    assert version_in_binary(b"\x003.13.0rc2\x00", "3.13") == "3.13.0rc2"
    assert version_in_binary(b"13.11.2\x00 3.11\x00", "3.11") is None


def test_python_version_falls_back_to_the_package_then_the_series() -> None:
    stripped = [
        entry if entry[1] != "usr/bin/python3.11" else ("file", "usr/bin/python3.11", b"\x7fELF", 0o755)
        for entry in BASE
    ]
    assert observe_tree(build(stripped)).interpreters[-1] == InterpreterFact(
        path="/usr/bin/python3.11", version="3.11.2"
    )
    bare = build([("file", "opt/py/bin/python3.13", b"\x7fELF", 0o755)])
    assert observe_tree(bare).interpreters == (
        InterpreterFact(path="/opt/py/bin/python3.13", version="3.13"),
    )


def test_dists_record_and_drift_in_files() -> None:
    tamper = [
        ("file", f"{VENV_SITE.lstrip('/')}/sklearn/base.py", b"changed\n"),
        ("whiteout", f"{VENV_SITE.lstrip('/')}/sklearn/__init__.py"),
        ("whiteout", f"{VENV_SITE.lstrip('/')}/sklearn/__pycache__"),
    ]
    clean = observe_tree(build(BASE, SLIM, VENV))
    dists = {(d.site, d.name): d for d in clean.python_dists}
    assert sorted(dists) == [
        ("/opt/venv/lib/python3.11/site-packages", "scikit-learn"),
        ("/opt/venv/lib/python3.11/site-packages", "six"),
        (SITE, "pip"),
    ]
    sklearn = dists[(VENV_SITE, "scikit-learn")]
    assert sklearn.version == "1.4.2" and not sklearn.modified_files and not sklearn.missing_files
    assert any(entry.path == "../../../bin/skl" and entry.size for entry in sklearn.record)
    drifted = {d.name: d for d in observe_tree(build(BASE, SLIM, VENV, tamper)).python_dists}
    assert drifted["scikit-learn"].modified_files == ("sklearn/base.py",)
    assert drifted["scikit-learn"].missing_files == ("sklearn/__init__.py",)  # the .pyc is a cache


def test_record_parsing_keeps_the_urlsafe_form() -> None:
    entries = parse_record('a.py,sha256=abc_-,12\nb.dist-info/RECORD,,\n"c,d.py",md5=xx,3\n')
    assert [(e.path, e.sha256, e.size) for e in entries] == [
        ("a.py", "abc_-", 12),
        ("b.dist-info/RECORD", None, None),
        ("c,d.py", None, 3),
    ]
    assert urlsafe_digest("00" * 32) == "A" * 43


def test_cuda_from_env_files_and_wheels() -> None:
    config = image_config(
        [],
        env={
            "CUDA_VERSION": "12.1.1",
            "NV_CUDNN_VERSION": "8.9.0.131",
            "NCCL_VERSION": "2.17.1",
            "PATH": "/usr/local/bin:/usr/bin",
        },
    )
    fs = build(
        [
            (
                "file",
                "usr/local/cuda-12.1/version.json",
                json.dumps({"cuda": {"version": "12.1.1"}, "cuda_cudart": {"version": "12.1.105"}}).encode(),
            ),
            ("symlink", "usr/local/cuda", "cuda-12.1"),
            ("file", "usr/lib/x86_64-linux-gnu/libcudnn.so.8.9.0", b"ELF"),
            ("symlink", "usr/lib/x86_64-linux-gnu/libcudnn.so.8", "libcudnn.so.8.9.0"),
            *dist_info("opt/venv/lib/python3.11/site-packages", "nvidia-nccl-cu12", "2.18.1", {}),
            ("file", "opt/venv/pyvenv.cfg", b"version = 3.11.2\n"),
        ]
    )
    facts = observe_tree(fs, config)
    assert facts.cuda == (
        CudaComponent(name="cuda", version="12.1.1", source="file:/usr/local/cuda-12.1/version.json"),
        # the library's file name says 8.9.0; the env says the same version more precisely
        CudaComponent(name="cudnn", version="8.9.0.131", source="image:env:NV_CUDNN_VERSION"),
        CudaComponent(name="nccl", version="2.18.1", source="wheel:nvidia-nccl-cu12"),
        CudaComponent(name="runtime", version="12.1.105", source="file:/usr/local/cuda-12.1/version.json"),
    )
    assert ("CUDA_VERSION", "12.1.1") in facts.env


def test_config_labels_env_architecture_and_artifacts() -> None:
    layers = [layer_tar(BASE), layer_tar([("file", "models/model.joblib", b"weights")])]
    config = image_config(layers, labels={"org.opencontainers.image.title": "fraud"}, architecture="arm64")
    fs = LayeredFS([index_layer([layer], interest=probe_interest) for layer in layers])
    facts = observe_tree(fs, config, artifacts=["/models/model.joblib", "/models/absent"])
    assert facts.labels == (("org.opencontainers.image.title", "fraud"),)
    assert facts.architecture == "arm64"
    assert facts.layer_diff_ids == tuple(config["rootfs"]["diff_ids"])
    assert [a.path for a in facts.artifacts] == ["/models/model.joblib"]
    assert facts.artifacts[0].sha256 == __import__("hashlib").sha256(b"weights").hexdigest()


def test_observation_is_deterministic() -> None:
    assert observe_tree(build(BASE, SLIM, VENV)) == observe_tree(build(BASE, SLIM, VENV))
    # Equal within one process is not enough: set and dict orders follow string hashing, which each
    # interpreter seeds anew. Two interpreters with other seeds must print the very same facts.
    code = (
        "from mlenv.observe import observe_tree;"
        "from tests.observe.test_probes import BASE, SLIM, VENV, build;"
        "print(repr(observe_tree(build(BASE, SLIM, VENV))))"
    )
    printed = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)},
        ).stdout
        for seed in ("1", "2")
    ]
    assert printed[0] == printed[1] == repr(observe_tree(build(BASE, SLIM, VENV))) + "\n"


def test_directory_tree_of_a_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text("ID=alpine\nVERSION_ID=3.20.0\n")
    facts = observe_tree(str(tmp_path))
    assert (facts.os_id, facts.os_version, facts.apt, facts.glibc) == ("alpine", "3.20.0", (), None)


def test_distro_packaged_dists_are_not_checked_against_record() -> None:
    # Debian's python3-pip ships the wheel's RECORD (../scripts/pip) but dpkg put the script in /usr/bin.
    debian_site = "usr/lib/python3/dist-packages"
    entries = dist_info(debian_site, "pip", "23.0.1", {"../scripts/pip": b"#!"})
    entries = [e for e in entries if not e[1].endswith("/scripts/pip")]
    pip = next(d for d in observe_tree(build(BASE, entries)).python_dists if d.name == "pip")
    assert pip.missing_files == () and any(r.path == "../scripts/pip" for r in pip.record)
    installed = [*entries, ("file", f"{debian_site}/pip-23.0.1.dist-info/INSTALLER", b"pip\n")]
    pip = next(d for d in observe_tree(build(BASE, installed)).python_dists if d.name == "pip")
    assert pip.missing_files == ("../scripts/pip",)  # an installer wrote it: its RECORD is the truth
