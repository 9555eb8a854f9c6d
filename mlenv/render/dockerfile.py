"""Lock -> Dockerfile lines, in the order things change least to most often.

System packages, then Python packages, then the user, then app code, then models: a model retrain
rebuilds one layer, not the environment.

Every layer of the final image is bit-for-bit reproducible on the legacy builder, which means:
- context files come in as tars mlenv writes with sorted entries and fixed times (COPY of a context
  directory stamps it with the build time);
- what a RUN changes gets its mtime clamped to SOURCE_DATE_EPOCH before the layer is committed;
- no step deletes a file an earlier layer of the final image holds: the whiteout that records a
  deletion carries the deletion's wall-clock time, and nothing inside the build can change it. So
  the apt install and the venv happen in side stages, and only what they changed is copied over,
  from a staging tree whose parents already exist (`COPY --from` to a new directory stamps it and
  its parent with the build time; copying a tree onto `/` does not).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from mlenv.model.facts import HealthcheckFact
from mlenv.model.lock import Lock, LockedBase
from mlenv.render.config import home_dir, image_settings, mount_dir, venv_env
from mlenv.render.entrypoint import needs_entrypoint
from mlenv.render.quote import quote, quote_argv

DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "index.docker.io", "docker.io"})
APP_UID = 10001
APP_TAR = "app.tar"
MODELS_TAR = "models.tar"
DEBS_TAR = "debs.tar"
ENTRYPOINT_TAR = "entrypoint.tar"
DEBS_DIR = "/mlenv-debs"  # where the system stage unpacks debs.tar
STAGE = "/mlenv-stage"  # in a side stage: the files to copy onto the final image's root
# Mounted or created by the engine in every build container (its init layer), never part of a layer:
# a clamp that touched them would copy them up into the RUN's layer.
RUNTIME_PATHS = (
    "/proc",
    "/sys",
    "/dev",
    "/.dockerenv",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/etc/mtab",
)
# Written by useradd; removed only when the RUN created them (deleting a base file leaves a whiteout).
USER_VOLATILE = (
    "/var/log/lastlog",
    "/var/log/faillog",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/passwd-",
    "/etc/group-",
)
# Written by apt/dpkg on every run, with times or run-specific content: removed in the system
# stage before its changes are staged, so the final image keeps the base's own copies, if any.
VOLATILE = (
    "/var/lib/apt/lists/*",
    "/var/cache/apt/*",
    "/var/cache/debconf/*-old",
    "/var/lib/dpkg/*-old",
    "/var/log/apt",
    "/var/log/dpkg.log",
    "/var/log/alternatives.log",
    "/var/cache/ldconfig/aux-cache",
    # fontconfig's postinst and trigger send fc-cache -v's output here (run-specific: the stale cache
    # files it cleaned); verify explains it only in images built before it was removed.
    "/var/log/fontconfig.log",
)


# Byte code for every module that has none, hash-checked (reproducible, and valid whatever the file
# times). Byte code a wheel ships is left as installed: rewriting it would break its RECORD hash.
_COMPILE = (
    "import importlib.util as u, pathlib, py_compile as c; "
    "[c.compile(str(p), cfile=u.cache_from_source(str(p)), doraise=False, quiet=2, "
    "invalidation_mode=c.PycInvalidationMode.CHECKED_HASH) "
    "for p in sorted(pathlib.Path('{venv}/lib').rglob('*.py')) "
    "if not pathlib.Path(u.cache_from_source(str(p))).exists()]"
)


def base_reference(base: LockedBase, platform: str | None = None) -> str:
    """`registry/repository@digest`, spelled the way the Docker engine expects: the digest the lock pinned,
    or with `platform` that platform's own manifest."""
    registry = "docker.io" if base.registry in DOCKER_HUB_HOSTS else base.registry
    digest = base.digest
    if platform is not None:
        digest = next(p.manifest_digest for p in base.platforms if p.platform == platform)
    return f"{registry}/{base.repository}@{digest}"


def stage_base(lock: Lock) -> str:
    """What the stages start FROM. A lock of several platforms, as one platform's build sees it
    (model.lock.for_platform), names that platform's manifest: the legacy builder keeps one image per
    reference, so the index digest would give an arm64 build the amd64 base pulled before it (measured,
    dockerd 20.10). Otherwise the digest the lock pinned, which buildx resolves per platform itself."""
    assert lock.base is not None
    if len(lock.target.platforms) == 1 and len(lock.base.platforms) > 1:
        return base_reference(lock.base, lock.target.platforms[0])
    return base_reference(lock.base)


def source_date_epoch(lock: Lock) -> int:
    """The one time every generated timestamp uses: the lock's as-of, or the epoch."""
    return int(lock.as_of.timestamp()) if lock.as_of is not None else 0


def _prune(prefix: str = "", also: tuple[str, ...] = ()) -> str:
    """find(1) words that skip the engine's runtime mounts and `also` (paths under `prefix`, e.g. '.')."""
    return "\\( " + " -o ".join(f"-path {prefix}{p}" for p in RUNTIME_PATHS + also) + " \\) -prune -o"


def _clamp(epoch: int) -> str:
    """Set the mtime of everything this RUN changed (newer than `$start`) to the epoch."""
    return f"find / -xdev {_prune()} -newermt @$start -exec touch --no-dereference --date=@{epoch} {{}} +"


def _stage_parents(path: str) -> list[str]:
    """Steps that create the parents of `path` under STAGE with the metadata they have at `/`, so
    copying the stage onto `/` leaves those directories as they were."""
    parents = [str(p) for p in reversed(PurePosixPath(path).parents) if str(p) != "/"]
    steps = []
    for parent in parents:
        staged = quote(STAGE + parent, into="shell")
        steps += [
            f"mkdir -p {staged}",
            f"chmod --reference={quote(parent, into='shell')} {staged}",
            f"chown --reference={quote(parent, into='shell')} {staged}",
        ]
    return steps


def _run(steps: list[str]) -> Iterator[str]:
    """One RUN (one layer) over several lines, one step per line, stopping at the first failure."""
    yield "RUN set -eux; \\"
    for index, step in enumerate(steps):
        yield f"    {step}; \\" if index < len(steps) - 1 else f"    {step}"


def dockerfile_lines(
    lock: Lock,
    *,
    lock_digest: str,
    mlenv_version: str,
    fetch: Literal["host", "build"],
    context_dir: str,
    wheels_dir: str,
) -> Iterator[str]:
    """The whole Dockerfile: the dependency stages, then the final steps."""
    yield f"# Generated by mlenv {mlenv_version} from mlenv.lock {lock_digest}."
    yield "# Do not edit: change mlenv.toml, run `mlenv lock`, then `mlenv build`."
    yield f"# Build flavour: {_flavour(fetch)}."
    yield ""
    yield from dependency_lines(lock, fetch=fetch, context_dir=context_dir, wheels_dir=wheels_dir)
    yield from final_lines(
        final_steps(lock, lock_digest=lock_digest, mlenv_version=mlenv_version, context_dir=context_dir)
    )


def _flavour(fetch: Literal["host", "build"]) -> str:
    if fetch == "host":
        return "hermetic: every input was fetched on the host and hash-checked"
    return "fetches from the locked URLs, checked against the locked hashes"


def dependency_lines(
    lock: Lock,
    *,
    fetch: Literal["host", "build"],
    context_dir: str,
    wheels_dir: str,
) -> Iterator[str]:
    """The Dockerfile up to the user: the apt and venv stages and the final stage's dependency layers,
    which change only with the lock's base, apt and python sections (`mlenv build` builds them once
    and reuses the image). Nothing here depends on the rest of the lock."""
    base = stage_base(lock)
    epoch = source_date_epoch(lock)
    venv = quote(lock.python.venv, into="shell")

    # ---- builder: the venv. Wheels and pip never reach the final image.
    yield "# Python packages go into a venv in this stage; only the venv is copied into the final image."
    yield f"FROM {base} AS builder"
    yield f"ENV SOURCE_DATE_EPOCH={epoch} PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1"
    yield f"COPY {context_dir}/requirements.txt /tmp/mlenv/requirements.txt"
    if fetch == "host" and lock.python.packages:  # a lock with no Python pins has no wheels directory
        yield f"COPY {wheels_dir}/ /tmp/mlenv/wheels/"
        source = "--no-index --find-links /tmp/mlenv/wheels --only-binary :all:"
    else:
        extra = "".join(f" --extra-index-url {quote(u, into='shell')}" for u in lock.python.extra_index_urls)
        source = f"--index-url {quote(lock.python.index_url, into='shell')}{extra}"
    locked = {p.name for p in lock.python.packages}
    bootstrap = sorted({"pip", "setuptools"} - locked)  # put there by ensurepip, not by the lock
    install = [f"python3 -m venv {venv}"]
    if lock.python.packages:
        install.append(
            f"{venv}/bin/python -m pip install {source} --require-hashes --no-deps --no-compile "
            "-r /tmp/mlenv/requirements.txt"
        )
    if bootstrap:
        install.append(f"{venv}/bin/python -m pip uninstall --yes {' '.join(bootstrap)}")
    install += [
        f"{venv}/bin/python -c {quote(_COMPILE.format(venv=lock.python.venv), into='shell')}",
        *_stage_parents(lock.python.venv),
        f"mv {venv} {quote(STAGE + lock.python.venv, into='shell')}",
        f"find {STAGE} -newermt @{epoch} -exec touch --no-dereference --date=@{epoch} {{}} +",
    ]
    yield from _run(install)
    yield ""

    # ---- system: the apt closure, installed where deleting the debs leaves no trace in the image.
    if lock.apt.packages:
        yield from _system_stage(lock, base=base, epoch=epoch, fetch=fetch, context_dir=context_dir)
        yield ""

    # ---- final stage
    yield "# The final image: the locked base, by digest."
    yield f"FROM {base}"
    if lock.apt.packages:
        yield "# System packages: what the apt install in the system stage changed."
        yield f"COPY --from=system {STAGE}/ /"

    yield "# Python packages: the venv built above."
    yield f"COPY --from=builder {STAGE}/ /"
    # The venv's variables on two lines; their values are plain words, so no quoting.
    variables = venv_env(lock)
    first, second = variables[:2], variables[2:]
    yield "ENV " + " ".join(f"{k}={v}" for k, v in first) + " \\"
    yield "    " + " ".join(f"{k}={v}" for k, v in second)

    user = quote(lock.app.user, into="shell")
    home = quote(home_dir(lock), into="shell")
    yield "# A non-root user that owns nothing but what it must write; the workdir made here, not by WORKDIR"
    yield "# (which would stamp it with the build time)."
    writable = sorted({m.target.rsplit("/", 1)[0] or "/" for m in lock.models if m.strategy == "download"})
    user_steps = [
        "start=$(date +%s)",
        "fresh=$(for f in " + " ".join(USER_VOLATILE) + '; do [ -e "$f" ] || echo "$f"; done)',
        f"SOURCE_DATE_EPOCH={epoch} useradd --system --uid {APP_UID} --user-group --no-create-home "
        f"--home-dir {home} --shell /usr/sbin/nologin {user}",
        f"install -d -o {user} -g {user} {home} {home}/.cache",
    ]
    user_steps += [f"install -d -o {user} -g {user} {quote(d, into='shell')}" for d in writable]
    user_steps += [f"mkdir -p {quote(lock.app.workdir, into='shell')}", "rm -f $fresh", _clamp(epoch)]
    yield from _run(user_steps)


@dataclass(frozen=True, kw_only=True)
class FinalStep:
    """One instruction of the final stage after the dependency layers. `tar`: the context tar it adds
    as a layer (None: it sets config only); `checks_only`: a RUN that checks and changes nothing, which
    `mlenv build` does on the host instead (it assembles these steps itself, build.assemble)."""

    instruction: str
    comment: str | None = None
    tar: str | None = None
    checks_only: bool = False


def final_steps(lock: Lock, *, lock_digest: str, mlenv_version: str, context_dir: str) -> list[FinalStep]:
    """The final stage's instructions after the user is made: what changes most often (app code, models)
    and the config. The Dockerfile writes them as lines; `mlenv build` writes the same layers and
    config itself, so a rebuild after an app edit sends only these tars to the engine."""
    settings = image_settings(lock, lock_digest=lock_digest, mlenv_version=mlenv_version)
    steps = [
        FinalStep(instruction=f"ENV {key}={quote(value, into='word')}") for key, value in settings.app_env
    ]
    if lock.app.copy:
        steps.append(
            FinalStep(instruction=f"ADD {context_dir}/{APP_TAR} /", comment="Application code.", tar=APP_TAR)
        )
    steps.append(FinalStep(instruction=f"WORKDIR {settings.working_dir}"))
    baked = sorted((m for m in lock.models if m.strategy == "bake"), key=lambda m: m.target)
    if baked:
        steps.append(
            FinalStep(
                instruction=f"ADD {context_dir}/{MODELS_TAR} /",
                comment="Models baked into the image, checked against the lock.",
                tar=MODELS_TAR,
            )
        )
        checks = " ".join(quote(f"{m.sha256}  {m.target}", into="shell") for m in baked)
        steps.append(
            FinalStep(
                instruction=f"RUN printf '%s\\n' {checks} | sha256sum --check --strict -", checks_only=True
            )
        )
    for model in sorted((m for m in lock.models if m.strategy == "mount"), key=lambda m: m.target):
        steps.append(
            FinalStep(
                instruction=f"VOLUME {quote_argv([mount_dir(model)])}",
                comment=f"Mount {model.target} read-only (docker run -v HOST:{model.target}:ro); "
                "checked at start-up.",
            )
        )
    if needs_entrypoint(lock):
        steps.append(FinalStep(instruction=f"ADD {context_dir}/{ENTRYPOINT_TAR} /", tar=ENTRYPOINT_TAR))
    steps.append(FinalStep(instruction=f"USER {settings.user}"))
    steps += [FinalStep(instruction=f"EXPOSE {port.removesuffix('/tcp')}") for port in settings.exposed_ports]
    if settings.healthcheck is not None:
        steps.append(FinalStep(instruction=_healthcheck(settings.healthcheck)))
    steps.append(
        FinalStep(
            instruction="LABEL "
            + " \\\n      ".join(f"{k}={quote(v, into='word')}" for k, v in settings.labels)
        )
    )
    if settings.entrypoint is not None:
        steps.append(FinalStep(instruction=f"ENTRYPOINT {quote_argv(settings.entrypoint)}"))
    if settings.cmd is not None:
        steps.append(FinalStep(instruction=f"CMD {quote_argv(settings.cmd)}"))
    return steps


def final_lines(steps: list[FinalStep]) -> Iterator[str]:
    for step in steps:
        if step.comment is not None:
            yield f"# {step.comment}"
        yield step.instruction


def _system_stage(
    lock: Lock, *, base: str, epoch: int, fetch: Literal["host", "build"], context_dir: str
) -> Iterator[str]:
    """Install the apt closure, check it, and stage every path the install changed (ctime newer than
    the RUN's start) with its metadata; directories that only hold changed files keep the
    metadata they have in the base."""
    names = sorted(lock.apt.packages, key=lambda p: p.name)
    yield f"# System packages: the locked apt closure, exactly ({len(names)} packages)."
    yield f"FROM {base} AS system"
    steps = ["start=$(date +%s)", f"export SOURCE_DATE_EPOCH={epoch} DEBIAN_FRONTEND=noninteractive"]
    if fetch == "host":
        yield f"ADD {context_dir}/{DEBS_TAR} /"
        steps.append(f"apt-get install --yes --no-install-recommends {DEBS_DIR}/*.deb")
        cleanup = [DEBS_DIR]
    else:
        pins = " ".join(
            quote(
                f"{p.name}:{p.architecture}={p.version}"
                if p.architecture != "all"
                else f"{p.name}={p.version}",
                into="shell",
            )
            for p in names
        )
        steps += ["apt-get update", f"apt-get install --yes --no-install-recommends {pins}"]
        cleanup = []
    expected = " ".join(quote(f"{p.name}={p.version}", into="shell") for p in names)
    packages = " ".join(quote(p.name, into="shell") for p in names)
    steps.append(f"dpkg-query -W -f '${{Package}}=${{Version}}\\n' {packages} | sort > /tmp/mlenv-apt.txt")
    steps.append(f"printf '%s\\n' {expected} | sort | diff - /tmp/mlenv-apt.txt")
    steps.append("rm -rf " + " ".join(cleanup + ["/tmp/mlenv-apt.txt", *VOLATILE]))
    steps += [
        f"mkdir {STAGE}",
        "cd /",
        f"find . -xdev -mindepth 1 {_prune('.', (STAGE,))} "
        f"-newerct @$start -print0 | tar --null --no-recursion --xattrs --xattrs-include='*' -T - -cf - "
        f"| tar -xpf - --xattrs --xattrs-include='*' -C {STAGE}",
        f"cd {STAGE}",
        'find . -mindepth 1 -type d -exec sh -c \'for d; do chmod --reference="/$d" "$d"; '
        'chown --reference="/$d" "$d"; touch --reference="/$d" "$d"; done\' sh {} +',
        f"find . -newermt @$start -exec touch --no-dereference --date=@{epoch} {{}} +",
    ]
    yield from _run(steps)


def _healthcheck(check: HealthcheckFact) -> str:
    seconds = [check.interval // 10**9, check.timeout // 10**9, check.start_period // 10**9]
    options = "--interval={}s --timeout={}s --start-period={}s".format(*seconds)
    kind, *argv = check.test
    command = f"CMD {quote_argv(argv)}" if kind == "CMD" else f"CMD {quote(argv[0], into='line')}"
    return f"HEALTHCHECK {options} --retries={check.retries} {command}"
