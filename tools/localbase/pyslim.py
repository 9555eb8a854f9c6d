"""A python:3.X-slim-layout base made here (Docker Hub cannot be reached): CPython built from source on
the debootstrap minbase image, laid out as the official slim image's Dockerfile lays it out.

What matches the official image: CPython under /usr/local, configured with --enable-shared and
--with-ensurepip (so pip is in /usr/local too), ldconfig run, `PYTHON_VERSION` and `LANG` in the image's
environment, the build dependencies purged while the runtime libraries the build links stay (marked by
what `ldd` finds), test directories, .pyc files and the static libpython removed, and the unversioned
`python`/`pip`/`pydoc`/`idle`/`python-config` links in /usr/local/bin (make install and ensurepip
write only the `3` and `3.11` names).

What does not: the source is Debian's CPython source package's upstream tarball (python3.11's
.orig.tar.gz, the unpatched upstream release, checked by the sha256 in Debian's Sources index), not
python.org's, and the compile is lean, as CI builds it within a 45-minute suite on 2 cores: no PGO
(--enable-optimizations runs the test suite under instrumentation, tens of minutes here), no LTO, no
tkinter (tk-dev is large), `make -j2`, no test suite.

The image is tagged by a hash of its Dockerfile, which names the minbase image's recipe tag, the source's
sha256 and every flag: the engine's data root is cached, so a machine builds it once per recipe.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import docker

from tools.localbase.cache import cache_dir, cache_lock
from tools.localbase.dockerd import Daemon
from tools.localbase.images import MIRROR, BaseImage, push_image
from tools.localbase.registry import Registry

PYTHON_VERSION = "3.11.2"
MAJOR_MINOR = "3.11"
# bookworm's python3.11 source package (3.11.2-6+deb12uN): its .orig.tar.gz is upstream's Python-3.11.2.tgz.
SOURCE_URL = f"{MIRROR}/pool/main/p/python3.11/python3.11_{PYTHON_VERSION}.orig.tar.gz"
SOURCE_SHA256 = "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849"
REPOSITORY = "mlenv-test/bookworm-pyslim"
# What the official slim image keeps installed besides the libraries the build links.
RUNTIME_PACKAGES = ("ca-certificates", "netbase", "tzdata")
BUILD_PACKAGES = (
    "dpkg-dev",
    "gcc",
    "libbz2-dev",
    "libc6-dev",
    "libexpat1-dev",
    "libffi-dev",
    "libgdbm-dev",
    "liblzma-dev",
    "libncursesw5-dev",
    "libreadline-dev",
    "libsqlite3-dev",
    "libssl-dev",
    "make",
    "uuid-dev",
    "wget",
    "xz-utils",
    "zlib1g-dev",
)
CONFIGURE = (
    "--enable-loadable-sqlite-extensions",
    "--enable-option-checking=fatal",
    "--enable-shared",
    "--with-ensurepip",
    "--with-system-expat",
)
JOBS = 2


@dataclass(frozen=True, kw_only=True)
class SlimBase:
    local: str  # the engine's tag, named by the recipe
    ref: str  # the loopback registry reference, with tag
    digest: str  # what `docker push` printed
    build_seconds: float | None  # None: the engine already had this recipe's image


def dockerfile(minbase_tag: str) -> str:
    """The recipe: one RUN, so no layer keeps the source tree or the build dependencies."""
    build = " ".join(BUILD_PACKAGES)
    configure = " ".join(CONFIGURE)
    # ldd of everything executable under /usr/local names the shared libraries the build links; their
    # packages are marked manual so the purge of the build dependencies keeps them (usrmerge: ldd says
    # /lib/..., dpkg knows /usr/lib/..., so the pattern drops the prefix).
    keep_linked = (
        "find /usr/local -type f -executable -exec ldd '{}' ';' 2>/dev/null"
        " | awk '/=>/ { print $(NF-1) }' | grep -v '^/usr/local/' | sed -E 's#^/(usr/)?#*#' | sort -u"
        " | xargs -r dpkg-query --search | cut -d: -f1 | sort -u | xargs -r apt-mark manual"
    )
    run = " && ".join(
        [
            "set -eux",
            "apt-get update",
            f"apt-get install -y --no-install-recommends {' '.join(RUNTIME_PACKAGES)}",
            "saved=$(apt-mark showmanual)",
            f"apt-get install -y --no-install-recommends {build}",
            f"wget -q -O /tmp/python.tgz {SOURCE_URL}",
            f"echo '{SOURCE_SHA256}  /tmp/python.tgz' | sha256sum -c -",
            "mkdir -p /usr/src/python",
            "tar -xzf /tmp/python.tgz -C /usr/src/python --strip-components=1",
            "rm /tmp/python.tgz",
            "cd /usr/src/python",
            f'./configure --build="$(dpkg-architecture --query DEB_BUILD_GNU_TYPE)" {configure}',
            # Stripped at link time, as the official image's binaries are (no debug info: 77 MB -> about 50).
            f"make -j{JOBS} LDFLAGS=-Wl,--strip-all",
            "make install",
            "cd /",
            "rm -rf /usr/src/python",
            "find /usr/local -depth \\( \\( -type d -a"
            " \\( -name test -o -name tests -o -name idle_test \\) \\)"
            " -o \\( -type f -a \\( -name '*.pyc' -o -name '*.pyo' -o -name 'libpython*.a' \\) \\) \\)"
            " -exec rm -rf '{}' +",
            "ldconfig",
            "apt-mark auto '.*' > /dev/null",
            "apt-mark manual $saved > /dev/null",
            keep_linked,
            # Debian's docker images ship SuggestsImportant "false" in apt.conf.d; minbase has no such file,
            # and without it debconf's Suggests (perl, then libdpkg-perl's gcc) keeps the compiler.
            "apt-get purge -y --auto-remove -o APT::AutoRemove::RecommendsImportant=false"
            " -o APT::AutoRemove::SuggestsImportant=false",
            "apt-get clean",
            "rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log",
            "for name in idle3 pip3 pydoc3 python3 python3-config; do"
            ' ln -svT "$name" "/usr/local/bin/$(echo "$name" | tr -d 3)"; done',
            "python3 --version",
            "pip --version",
        ]
    )
    return "\n".join(
        [
            f"FROM {minbase_tag}",
            "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"ENV PYTHON_VERSION={PYTHON_VERSION}",
            f"RUN {run}",
            'CMD ["python3"]',
            "",
        ]
    )


def slim_tag(minbase_tag: str) -> str:
    """The engine's tag for this recipe's image."""
    return f"{REPOSITORY}:{hashlib.sha256(dockerfile(minbase_tag).encode()).hexdigest()[:16]}"


def make_slim_base(daemon: Daemon, registry: Registry, minbase: BaseImage) -> SlimBase:
    """The slim-layout base in the engine (built once per recipe), pushed to `registry` as `:1`."""
    tag = slim_tag(minbase.local)
    with cache_lock(f"pyslim-{tag.rsplit(':', 1)[1]}"):
        seconds = _build(daemon.client, minbase.local, tag)
    digest = push_image(daemon.client, tag, registry.host, REPOSITORY, "1")
    return SlimBase(local=tag, ref=f"{registry.host}/{REPOSITORY}:1", digest=digest, build_seconds=seconds)


def _build(client: docker.DockerClient, minbase_tag: str, tag: str) -> float | None:
    try:
        client.images.get(tag)
        return None
    except docker.errors.ImageNotFound:
        pass
    context = cache_dir("pyslim", tag.rsplit(":", 1)[1])
    (context / "Dockerfile").write_text(dockerfile(minbase_tag))
    started = time.monotonic()
    log: list[str] = []
    for event in client.api.build(path=str(context), tag=tag, rm=True, forcerm=True, decode=True):
        if "error" in event:
            raise RuntimeError(f"building {tag} failed: {event['error']}\n{''.join(log)[-3000:]}")
        log.append(str(event.get("stream", "")))
    seconds = round(time.monotonic() - started, 1)
    # Kept beside the Dockerfile: how long this machine took (the report and CI's budget read it).
    (context / "build.json").write_text(json.dumps({"tag": tag, "seconds": seconds}) + "\n")
    return seconds
