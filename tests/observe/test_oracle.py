"""The observer against the truth: what dpkg-query and pip list say inside a running container of
the same image, read through each of the four transports; and a debootstrap tree as a directory.

Marked docker (and registry for docker://); the base images, daemon and registry come from tests/infra.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from packaging.utils import canonicalize_name

from mlenv.errors import ImageError
from mlenv.model.facts import EnvFacts
from mlenv.observe import inspect_image, observe_image, observe_tree
from tests.helpers import session_tag

from .images import ImageForms, build, demo_wheel, oci_from_archive, run, save

pytestmark = pytest.mark.docker

TRANSPORTS = ["docker-daemon", "docker-archive", "oci", pytest.param("docker", marks=pytest.mark.registry)]
INSTALLED = {
    "installed",
    "half-configured",
    "unpacked",
    "half-installed",
    "triggers-awaited",
    "triggers-pending",
}
DPKG_FORMAT = "${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Status}\\n"


def forms(image: Any) -> ImageForms:
    return ImageForms(local=image.local, archive=Path(image.archive), oci=Path(image.oci), ref=image.ref)


def dpkg_truth(lines: str) -> set[tuple[str, str, str]]:
    found = set()
    for line in lines.splitlines():
        name, version, arch, status = line.split("\t")
        if status in INSTALLED:
            found.add((name, version, arch))
    return found


def apt_set(facts: EnvFacts) -> set[tuple[str, str, str]]:
    return {(p.name, p.version, p.architecture) for p in facts.apt}


def pip_truth(client: Any, local: str, sites: list[str]) -> dict[str, set[tuple[str, str]]]:
    """`pip list --path SITE` for each site, with a pip made in the container from Debian's bundled
    wheels (no network: the image's own python3 has no pip)."""
    script = (
        'python3 -m venv /tmp/oracle >/dev/null && for site in "$@"; do '
        '/tmp/oracle/bin/python -m pip list --disable-pip-version-check --format json --path "$site"; done'
    )
    output = run(client, local, "sh", "-c", script, "sh", *sites)
    lists = [json.loads(line) for line in output.splitlines() if line.startswith("[")]
    assert len(lists) == len(sites), output
    return {
        site: {(canonicalize_name(d["name"]), d["version"]) for d in found}
        for site, found in zip(sites, lists, strict=True)
    }


def sys_path_sites(client: Any, local: str, python: str) -> list[str]:
    output = run(client, local, python, "-c", "import json, sys; print(json.dumps(sys.path))")
    return [
        p
        for p in json.loads(output.strip().splitlines()[-1])
        if p.endswith(("site-packages", "dist-packages"))
    ]


def dists_by_site(facts: EnvFacts, sites: list[str]) -> dict[str, set[tuple[str, str]]]:
    return {site: {(d.name, d.version) for d in facts.python_dists if d.site == site} for site in sites}


_truth_cache: dict[tuple[str, str], Any] = {}


def truth(client: Any, local: str, key: str, compute: Any) -> Any:
    """Ask the container once per image and question: containers take seconds to start."""
    if (local, key) not in _truth_cache:
        _truth_cache[(local, key)] = compute()
    return _truth_cache[(local, key)]


def reference(image: ImageForms, transport: str) -> str:
    return image.references()[transport]


# --------------------------------------------------------------------------- minbase


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_minbase_matches_dpkg_query(transport: str, docker_daemon: Any, base_image_minbase: Any) -> None:
    image = forms(base_image_minbase)
    facts = observe_image(reference(image, transport))
    client = docker_daemon.client
    want = truth(
        client,
        image.local,
        "dpkg",
        lambda: dpkg_truth(run(client, image.local, "dpkg-query", "-W", "-f", DPKG_FORMAT)),
    )
    assert apt_set(facts) == want
    assert (facts.os_id, facts.os_version, facts.architecture) == ("debian", "12", "amd64")
    assert (
        facts.glibc
        == run(client, image.local, "sh", "-c", "dpkg-query -W -f '${Version}' libc6 | cut -d- -f1").strip()
    )
    assert facts.python_dists == () and facts.interpreters == ()
    assert facts.layer_diff_ids and all(d.startswith("sha256:") for d in facts.layer_diff_ids)


# --------------------------------------------------------------------------- python


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_python_image_matches_dpkg_query_and_pip(
    transport: str, docker_daemon: Any, base_image_python: Any
) -> None:
    image = forms(base_image_python)
    client = docker_daemon.client
    facts = observe_image(reference(image, transport))
    want_apt = truth(
        client,
        image.local,
        "dpkg",
        lambda: dpkg_truth(run(client, image.local, "dpkg-query", "-W", "-f", DPKG_FORMAT)),
    )
    assert apt_set(facts) == want_apt
    version = truth(
        client,
        image.local,
        "python",
        lambda: run(
            client, image.local, "python3", "-c", "import platform; print(platform.python_version())"
        ).strip(),
    )
    interpreters = {i.path: i.version for i in facts.interpreters}
    assert interpreters["/usr/bin/python3"] == version
    real = run(client, image.local, "readlink", "-f", "/usr/bin/python3").strip()
    assert interpreters[real] == version
    sites = sorted(
        {d.site for d in facts.python_dists}
        | set(truth(client, image.local, "sys.path", lambda: sys_path_sites(client, image.local, "python3")))
    )
    want = truth(client, image.local, f"pip:{sites}", lambda: pip_truth(client, image.local, sites))
    assert dists_by_site(facts, sites) == want


@pytest.fixture(scope="module")
def venv_image(
    docker_daemon: Any,
    base_image_python: Any,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> ImageForms:
    """The python base with /opt/venv holding pip, setuptools and a local wheel, then one file of
    pip changed in a later layer: RECORD drift the observer must see."""
    client = docker_daemon.client
    work = tmp_path_factory.mktemp("venv-image")
    context = work / "context"
    context.mkdir()
    wheel = demo_wheel(context)
    tag = session_tag("observe-venv", base_image_python.ref, "1")
    build(
        client,
        base_image_python.local,
        tag,
        context,
        "\n".join(
            [
                f"FROM {base_image_python.local}",
                f"COPY {wheel.name} /tmp/",
                (
                    "RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-index --no-cache-dir "
                    f"/tmp/{wheel.name} "
                    f"&& rm /tmp/{wheel.name}"
                ),
                "RUN echo '# changed' >> /opt/venv/lib/python3.11/site-packages/demo_pkg/__init__.py",
                'LABEL org.opencontainers.image.title="observe-venv"',
                "",
            ]
        ),
    )
    archive = save(client, tag, work / "venv.tar")
    layout = oci_from_archive(archive, work / "oci", "1")
    yield ImageForms(local=tag, archive=archive, oci=layout, ref=None)  # type: ignore[misc]
    for name in (tag, *_pushed.values()):
        with contextlib.suppress(docker.errors.APIError):  # cleanup only
            client.images.remove(name, force=True)


_pushed: dict[str, str] = {}


def with_registry(image: ImageForms, client: Any, request: pytest.FixtureRequest) -> ImageForms:
    """The image also pushed to the test registry (once), for docker:// references."""
    if image.local not in _pushed:
        registry = request.getfixturevalue("registry")
        ref = f"{registry.host}/{image.local}"
        client.images.get(image.local).tag(ref)
        client.images.push(ref)
        _pushed[image.local] = ref
    return ImageForms(local=image.local, archive=image.archive, oci=image.oci, ref=_pushed[image.local])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_venv_image_matches_pip_list_and_sees_changed_files(
    transport: str, docker_daemon: Any, venv_image: ImageForms, request: pytest.FixtureRequest
) -> None:
    client = docker_daemon.client
    if transport == "docker":
        venv_image = with_registry(venv_image, client, request)
    observation = inspect_image(reference(venv_image, transport))
    facts = observation.facts
    venv_site = "/opt/venv/lib/python3.11/site-packages"
    pip_list = truth(
        client,
        venv_image.local,
        "venv-pip",
        lambda: json.loads(
            run(
                client,
                venv_image.local,
                "/opt/venv/bin/python",
                "-m",
                "pip",
                "list",
                "--disable-pip-version-check",
                "--format",
                "json",
            )
        ),
    )
    assert {(canonicalize_name(d["name"]), d["version"]) for d in pip_list} == dists_by_site(
        facts, [venv_site]
    )[venv_site]
    demo = next(d for d in facts.python_dists if d.name == "demo-pkg")
    assert (demo.version, demo.modified_files, demo.missing_files) == ("1.0", ("demo_pkg/__init__.py",), ())
    clean = [d for d in facts.python_dists if d.name != "demo-pkg" and (d.modified_files or d.missing_files)]
    assert clean == []
    interpreters = {i.path: i.version for i in facts.interpreters}
    assert interpreters["/opt/venv/bin/python"] == interpreters["/usr/bin/python3"]
    assert ("org.opencontainers.image.title", "observe-venv") in facts.labels
    assert observation.fs.sha256(f"{venv_site}/demo_pkg/__init__.py") == _sha256(b"VALUE = 42\n# changed\n")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.registry
def test_every_transport_reads_the_same_facts(
    docker_daemon: Any, venv_image: ImageForms, request: pytest.FixtureRequest
) -> None:
    venv_image = with_registry(venv_image, docker_daemon.client, request)
    results = {transport: observe_image(ref) for transport, ref in venv_image.references().items()}
    first = next(iter(results.values()))
    assert all(facts == first for facts in results.values()), list(results)


def test_missing_images_are_clear_errors(docker_daemon: Any) -> None:
    with pytest.raises(ImageError, match="no-such-image"):
        observe_image("docker-daemon:mlenv-test/no-such-image:0")


# --------------------------------------------------------------------------- directory trees


def test_debootstrap_tree_matches_dpkg_query(base_rootfs_python: Any) -> None:
    root = Path(
        base_rootfs_python if isinstance(base_rootfs_python, (str, Path)) else base_rootfs_python.path
    )
    facts = observe_tree(str(root))
    output = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={root}/var/lib/dpkg",
            "-W",
            "-f",
            DPKG_FORMAT.replace("\\t", "\t").replace("\\n", "\n"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert apt_set(facts) == dpkg_truth(output)
    assert (facts.os_id, facts.os_version, facts.glibc) == ("debian", "12", "2.36")
    if os.geteuid() == 0 and shutil.which("chroot"):
        version = subprocess.run(
            ["chroot", str(root), "python3", "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert {i.path: i.version for i in facts.interpreters}["/usr/bin/python3"] == version
