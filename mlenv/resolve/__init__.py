"""Spec -> Lock: resolve every layer of the environment, one module per layer."""

from __future__ import annotations

from mlenv.errors import ResolutionError
from mlenv.models import AppSpec, Lock, LockedApp, LockedCuda, Spec, Target
from mlenv.resolve.artifacts import lock_models
from mlenv.resolve.python import resolve_python
from mlenv.sources.pyresolver import ResolverBackend
from mlenv.spec import spec_hash


def target_from_spec(spec: Spec) -> Target:
    if spec.target.python is None or spec.target.glibc is None:
        raise ResolutionError("no target: give [target] python and glibc, or a base image to read them from")
    platforms = spec.base.platforms if spec.base is not None else ("linux/amd64",)
    return Target(platforms=platforms, python=spec.target.python, glibc=spec.target.glibc, source="spec")


def locked_app(app: AppSpec) -> LockedApp:
    return LockedApp(copy=app.copy, workdir=app.workdir, cmd=app.cmd, port=app.port, healthcheck=app.healthcheck,
                     user=app.user, env=app.env)


def resolve_lock(spec: Spec, *, python_backend: ResolverBackend | None = None) -> Lock:
    """Resolve the spec into a Lock. Network: the Python index (and later registries and apt mirrors)."""
    target = target_from_spec(spec)
    return Lock(
        name=spec.name,
        spec_hash=spec_hash(spec),
        as_of=spec.as_of,
        target=target,
        python=resolve_python(spec, target, python_backend),
        cuda=LockedCuda(requested=spec.cuda.version or "none"),
        app=locked_app(spec.app),
        models=lock_models(spec),
    )
