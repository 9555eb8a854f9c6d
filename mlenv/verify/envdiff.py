"""Two environments side by side, grouped by layer in ML terms: `mlenv diff A B`. Pure: no IO.

Each side is a Side: what a lock says an image built from it holds (`lock_side`, through verify's one
projection, verify.expected.image_contents), or what the observer read from an image (`image_side`).
`diff` lists, per layer, what changed from A to B: the base (digest, layers, OS); the dpkg set; the
Python interpreter; the Python packages added, removed, upgraded or downgraded, with the step
(major, minor, patch by packaging.version; "build" when only a local label such as +cu121 moved;
"pre-release" for a pre, post or dev change); the CUDA stack with its consequences (a CUDA or
cuDNN major change, the NVIDIA driver floor each side implies); the models (sha256, format, producers,
and whether each side's own pins load them by the lock's rule, model.producers).

How a lock and an image compare fairly. An image states more than a lock, and a lock states some
things an image cannot show, so a layer is compared only as far as both sides state it, and a layer
one side does not state is listed as not compared, with the reason (never as a difference):
- base: a lock states its base's digest and its exact layer list. An image states the digest only
  through the `org.opencontainers.image.base.digest` label (mlenv writes it), and its layer list holds
  the layers above the base too: the lock's layers must be the image's first layers. Two images
  compare their base by that label alone. os id, version, architecture and glibc where both state them.
- apt: a lock with a base states the image's whole dpkg set (the base's own packages and the locked
  closure). A lock without a base states only its closure: then only the packages it names are
  compared, so the other side's base packages are not reported as added.
- python-interpreter and python: the environment the app runs in. A lock's is its venv; an image's is
  the site directory holding the lock's venv when the other side is a lock, else the one holding the
  most distributions (a system site with pip alone is not the app's). Other sites are not compared.
- cuda: the components and their consequences. The driver floor is derived the same way on both sides
  from the components (the caller passes it in: the driver table is resolve's), not read from the
  lock's min-driver, so a lock and its image get the same floor.
- models: a lock states every model (sha256; its producers when the lock records them). An image
  states a model only at the paths a lock names, and only baked ones (a model downloaded or mounted
  at start is not in the image); two images do not compare models. Producers are compared only
  where both sides state them, and so are load problems (where both files were read), by library and
  versions, not by their wording ("the lock pins" on a lock is "the image has" on an image).
Files above the base and the image config are not diffed: proving those against a lock is verify's.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from debian.debian_support import version_compare
from packaging.version import InvalidVersion, Version

from mlenv.model.facts import AptFact, CudaComponent, EnvFacts, InterpreterFact
from mlenv.model.labels import LABEL_BASE_DIGEST
from mlenv.model.lock import Lock
from mlenv.model.modelfacts import ModelFacts, Producer
from mlenv.model.producers import ProducerProblem, producer_problems
from mlenv.verify.credentials import masked
from mlenv.verify.expected import image_contents, venv_site

SideKind = Literal["lock", "image"]
DiffLayer = Literal["base", "apt", "python-interpreter", "python", "cuda", "models"]
# added / removed: only B or only A has it; upgraded / downgraded: both, B's version is newer / older;
# changed: both, with other values that have no order (a digest, a sha256, a path); raised / lowered:
# a consequence that moved (the driver floor).
ChangeKind = Literal["added", "removed", "upgraded", "downgraded", "changed", "raised", "lowered"]
Step = Literal["major", "minor", "patch", "build", "pre-release"]


@dataclass(frozen=True, kw_only=True)
class BaseSide:
    digest: str | None  # what the lock resolved its base to / the image's base-digest label
    reference: str | None = None  # as the spec wrote it: shown, never compared (a registry may move)
    layers: tuple[str, ...] = ()  # diff_ids, bottom first
    # True for an image: its layer list goes on above the base, so only a lock's list is exact.
    layers_continue: bool = False
    os_id: str | None = None
    os_version: str | None = None
    architecture: str | None = None
    glibc: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelSide:
    path: str  # where the model is in the image (the lock's target)
    sha256: str | None  # None: an image has no file at the path
    strategy: str | None = None  # a lock's: bake, download, mount
    format: str | None = None  # the container format the model reader found ("joblib+zlib", "onnx")
    producers: tuple[Producer, ...] | None = None  # None: this side does not state them
    # Why this side's own packages may not load the model (model.producers, the rule `mlenv lock`
    # refuses by): stated where `format` is.
    problems: tuple[ProducerProblem, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Side:
    subject: str  # what the user named: a lock path, a project directory, an image reference
    kind: SideKind
    base: BaseSide | None  # None: no base stated (a lock without [base])
    apt: tuple[AptFact, ...]
    apt_complete: bool  # False: the lock's closure alone (no base to list the rest)
    interpreter: InterpreterFact | None
    site: str | None  # the site directory of `python`
    python: tuple[tuple[str, str], ...]  # (normalised name, version), sorted
    cuda: tuple[CudaComponent, ...]
    driver_floor: str | None
    models: tuple[ModelSide, ...] | None  # None: this side states no models (an image beside an image)


@dataclass(frozen=True, kw_only=True)
class Change:
    kind: ChangeKind
    subject: str  # a package, a base field ("digest", "os-version", "layer 2 of 3"), a model path
    a: str | None  # A's value; None when A has none
    b: str | None
    step: Step | None = None
    detail: str | None = None  # what the change means, in a sentence (cuDNN, the driver floor)


@dataclass(frozen=True, kw_only=True)
class LayerDiff:
    layer: DiffLayer
    compared: bool
    changes: tuple[Change, ...] = ()
    note: str | None = None  # why a layer was not compared, or what "same" covers ("46 packages")


@dataclass(frozen=True, kw_only=True)
class EnvDiff:
    a: Side
    b: Side
    layers: tuple[LayerDiff, ...]
    platform: str | None = None  # the platform both sides were read for

    @property
    def equal(self) -> bool:
        return not any(layer.changes for layer in self.layers)


# ---------------------------------------------------------------------------- the sides


def lock_side(lock: Lock, *, subject: str, platform: str, lock_digest: str, driver_floor: str | None) -> Side:
    """What an image built from `lock` for `platform` holds, by verify's projection of the lock."""
    contents = image_contents(lock, platform, lock_digest=lock_digest)
    base = None
    if contents.base is not None:
        chosen = contents.base.platform
        base = BaseSide(
            digest=contents.base.locked.digest,
            reference=contents.base.locked.reference,
            layers=chosen.diff_ids if chosen else (),
            os_id=chosen.os_id if chosen else None,
            os_version=chosen.os_version if chosen else None,
            architecture=contents.architecture,
            glibc=chosen.glibc if chosen else None,
        )
    apt = sorted((*contents.base_packages, *contents.apt), key=lambda d: (d.fact.name, d.fact.architecture))
    pins = {d.fact.name: d.fact.version for d in contents.python}
    models = tuple(
        ModelSide(
            path=m.locked.target,
            sha256=m.locked.sha256,
            strategy=m.locked.strategy,
            # A remote model, or a lock written before producers were recorded, states none.
            format=m.locked.facts.format if m.locked.facts is not None else None,
            producers=m.locked.facts.producers if m.locked.facts is not None else None,
            problems=producer_problems(m.locked.facts, pins, accepted=dict(m.locked.accept_producer))
            if m.locked.facts is not None
            else (),
        )
        for m in contents.models
    )
    return Side(
        subject=subject,
        kind="lock",
        base=base,
        apt=tuple(d.fact for d in apt),
        # A base locked without its dpkg set (an empty list) states no more than the closure either.
        apt_complete=bool(contents.base and contents.base.platform and contents.base.platform.packages),
        interpreter=contents.interpreter,
        site=venv_site(lock),
        python=tuple((d.fact.name, d.fact.version) for d in contents.python),
        cuda=tuple(c.fact for c in contents.cuda),
        driver_floor=driver_floor,
        models=models,
    )


def image_side(
    facts: EnvFacts,
    *,
    subject: str,
    driver_floor: str | None,
    site: str | None = None,
    model_paths: Iterable[str] | None = None,
    accepted: Mapping[str, Mapping[str, str]] | None = None,
) -> Side:
    """What the observer read from an image. `site`: the site directory to compare (the other side's
    venv), else the one with the most distributions. `model_paths`: the paths a lock names (None: this
    side states no models); their producers are what the observer's model reader found in each file,
    judged against the site's packages with the lock's accept-producer (`accepted`, by path), as verify
    judges them."""
    labels = dict(facts.labels)
    label = labels.get(LABEL_BASE_DIGEST)
    chosen = _app_site(facts, site)
    found = {a.path: a for a in facts.artifacts}
    python = tuple(sorted((d.name, d.version) for d in facts.python_dists if d.site == chosen))
    models = None
    if model_paths is not None:
        models = tuple(
            _image_model(
                path, found[path].sha256, found[path].model, dict(python), (accepted or {}).get(path)
            )
            if path in found
            else ModelSide(path=path, sha256=None)
            for path in sorted(set(model_paths))
        )
    return Side(
        subject=subject,
        kind="image",
        base=BaseSide(
            # A label is the image's own text: a credential put there is shown masked, as inspect shows it.
            digest=masked(LABEL_BASE_DIGEST, label) if label is not None else None,
            reference=None,
            layers=facts.layer_diff_ids,
            layers_continue=True,
            os_id=facts.os_id,
            os_version=facts.os_version,
            architecture=facts.architecture,
            glibc=facts.glibc,
        ),
        apt=tuple(sorted(facts.apt, key=lambda p: (p.name, p.architecture))),
        apt_complete=True,
        interpreter=_site_interpreter(facts, chosen),
        site=chosen,
        python=python,
        cuda=tuple(sorted(facts.cuda, key=lambda c: c.name)),
        driver_floor=driver_floor,
        models=models,
    )


def _image_model(
    path: str,
    sha256: str,
    model: ModelFacts | None,
    pins: Mapping[str, str],
    accepted: Mapping[str, str] | None,
) -> ModelSide:
    """Format and producers stated only where the reader read the file (not too big to keep, readable)."""
    if model is None or model.format == "unreadable":
        return ModelSide(path=path, sha256=sha256)
    return ModelSide(
        path=path,
        sha256=sha256,
        format=model.format,
        producers=model.producers,
        problems=producer_problems(model, pins, accepted=accepted, where="image"),
    )


def _app_site(facts: EnvFacts, preferred: str | None) -> str | None:
    counts: dict[str, int] = {}
    for dist in facts.python_dists:
        counts[dist.site] = counts.get(dist.site, 0) + 1
    if preferred is not None and preferred in counts:
        return preferred
    return min(counts, key=lambda s: (-counts[s], s)) if counts else None


def _site_interpreter(facts: EnvFacts, site: str | None) -> InterpreterFact | None:
    """The interpreter of `site`: a venv's or prefix's bin/pythonX.Y (site is PREFIX/lib/pythonX.Y/...)."""
    if site is None or "/lib/" not in site:
        return None
    prefix = site.split("/lib/", 1)[0]
    found = {i.path: i for i in facts.interpreters}
    series = posixpath.basename(posixpath.dirname(site))  # python3.11, or python3 for dist-packages
    for name in (series, "python3", "python"):
        interpreter = found.get(f"{prefix}/bin/{name}")
        if interpreter is not None:
            return interpreter
    return None


# ---------------------------------------------------------------------------- the comparison


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def diff(a: Side, b: Side, *, platform: str | None = None) -> EnvDiff:
    return EnvDiff(
        a=a,
        b=b,
        platform=platform,
        layers=(_base(a, b), _apt(a, b), _interpreter(a, b), _python(a, b), _cuda(a, b), _models(a, b)),
    )


def _unstated(layer: DiffLayer, a: Side, b: Side, what: str, missing: Iterable[Side]) -> LayerDiff:
    names = [f"{'A' if side is a else 'B'} ({side.kind})" for side in missing]
    verb = "state" if len(names) > 1 else "states"
    return LayerDiff(layer=layer, compared=False, note=f"{' and '.join(names)} {verb} no {what}")


def _base(a: Side, b: Side) -> LayerDiff:
    if a.base is None or b.base is None:
        return _unstated("base", a, b, "base image", [s for s in (a, b) if s.base is None])
    x, y = a.base, b.base
    changes: list[Change] = []
    if x.digest is not None and y.digest is not None and x.digest != y.digest:
        named = x.reference is not None and y.reference is not None and x.reference != y.reference
        detail = f"the spec names {x.reference} -> {y.reference}" if named else None
        changes.append(Change(kind="changed", subject="digest", a=x.digest, b=y.digest, detail=detail))
    changes += _layers(x, y)
    for field in ("os_id", "os_version", "architecture", "glibc"):
        old, new = getattr(x, field), getattr(y, field)
        if old is not None and new is not None and old != new:
            kind, step = version_step(old, new) if field in ("os_version", "glibc") else ("changed", None)
            changes.append(Change(kind=kind, subject=field.replace("_", "-"), a=old, b=new, step=step))
    note = None if changes else ", ".join(v for v in (_os_name(x), x.digest) if v)
    if x.digest is None or y.digest is None:
        unlabelled = " and ".join(n for n, s in (("A", x), ("B", y)) if s.digest is None)
        note = f"digest not compared: {unlabelled} has no {LABEL_BASE_DIGEST} label"
    return LayerDiff(layer="base", compared=True, changes=tuple(changes), note=note)


def _os_name(base: BaseSide) -> str | None:
    return f"{base.os_id} {base.os_version or ''}".strip() if base.os_id else None


def _layers(x: BaseSide, y: BaseSide) -> list[Change]:
    """A lock's exact list against an image's first layers; two images' lists are not the base's alone."""
    if x.layers_continue and y.layers_continue:
        return []
    if not x.layers or not y.layers:
        return []
    count = len(x.layers) if not x.layers_continue else len(y.layers)
    mine, theirs = x.layers[:count], y.layers[:count]
    if not x.layers_continue and not y.layers_continue and len(x.layers) != len(y.layers):
        return [Change(kind="changed", subject="layers", a=str(len(x.layers)), b=str(len(y.layers)))]
    for index in range(count):
        old = mine[index] if index < len(mine) else None
        new = theirs[index] if index < len(theirs) else None
        if old != new:
            subject = f"layer {index + 1} of {count}"
            return [Change(kind="changed", subject=subject, a=old, b=new)]
    return []


def _apt(a: Side, b: Side) -> LayerDiff:
    old = {(p.name, p.architecture): p.version for p in a.apt}
    new = {(p.name, p.architecture): p.version for p in b.apt}
    note = None
    if not a.apt_complete or not b.apt_complete:
        # A closure alone: the other side's base packages are not additions.
        names = {key for side, keys in ((a, old), (b, new)) if not side.apt_complete for key in keys}
        old = {k: v for k, v in old.items() if k in names}
        new = {k: v for k, v in new.items() if k in names}
        pinned = plural(len(names), "package") if names else "no packages"
        note = f"{pinned} that a lock without a base pins, compared alone"
    changes: list[Change] = []
    for key in sorted(set(old) | set(new)):
        subject = f"{key[0]}:{key[1]}"
        if key not in new:
            changes.append(Change(kind="removed", subject=subject, a=old[key], b=None))
        elif key not in old:
            changes.append(Change(kind="added", subject=subject, a=None, b=new[key]))
        elif old[key] != new[key]:
            order = version_compare(old[key], new[key])
            kind: ChangeKind = "upgraded" if order < 0 else "downgraded" if order > 0 else "changed"
            changes.append(Change(kind=kind, subject=subject, a=old[key], b=new[key]))
    if note is None and not changes:
        note = plural(len(old), "package")
    return LayerDiff(layer="apt", compared=True, changes=tuple(changes), note=note)


def _interpreter(a: Side, b: Side) -> LayerDiff:
    if a.interpreter is None or b.interpreter is None:
        missing = [s for s in (a, b) if s.interpreter is None]
        return _unstated("python-interpreter", a, b, "Python environment", missing)
    x, y = a.interpreter, b.interpreter
    changes = []
    if x.version != y.version:
        kind, step = version_step(x.version, y.version)
        detail = None
        if step in ("major", "minor"):
            detail = "another Python series: every compiled extension needs its wheel for it"
        changes.append(
            Change(kind=kind, subject="python", a=x.version, b=y.version, step=step, detail=detail)
        )
    if x.path != y.path:
        changes.append(Change(kind="changed", subject="path", a=x.path, b=y.path))
    note = None if changes else f"{x.version} at {x.path}"
    return LayerDiff(layer="python-interpreter", compared=True, changes=tuple(changes), note=note)


def _python(a: Side, b: Side) -> LayerDiff:
    if a.site is None or b.site is None:
        missing = [s for s in (a, b) if s.site is None]
        return _unstated("python", a, b, "Python packages", missing)
    changes = _versions(dict(a.python), dict(b.python))
    note = None if changes else plural(len(a.python), "package")
    return LayerDiff(layer="python", compared=True, changes=tuple(changes), note=note)


def _versions(old: Mapping[str, str], new: Mapping[str, str]) -> list[Change]:
    changes: list[Change] = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            changes.append(Change(kind="removed", subject=name, a=old[name], b=None))
        elif name not in old:
            changes.append(Change(kind="added", subject=name, a=None, b=new[name]))
        elif old[name] != new[name]:
            kind, step = version_step(old[name], new[name])
            changes.append(Change(kind=kind, subject=name, a=old[name], b=new[name], step=step))
    return changes


def version_step(old: str, new: str) -> tuple[ChangeKind, Step | None]:
    """Which way a version moved and by how much: the first release component that differs names the
    step (1.4.2 -> 1.5.0 is minor; 2.3.1 -> 2.5.1 minor; 8.9.2.26 -> 9.1.0.70 major). A version
    packaging cannot parse has no order: "changed", no step."""
    try:
        x, y = Version(old), Version(new)
    except InvalidVersion:
        return "changed", None
    if Version(x.public) == Version(y.public):
        # Local labels (+cu121, +cpu) name builds of one release; their order means nothing.
        return "changed", "build" if x.local != y.local else None
    kind: ChangeKind = "upgraded" if y > x else "downgraded" if y < x else "changed"
    width = max(len(x.release), len(y.release))
    left = x.release + (0,) * (width - len(x.release))
    right = y.release + (0,) * (width - len(y.release))
    for index, (first, second) in enumerate(zip(left, right, strict=True)):
        if first != second:
            steps: tuple[Step, ...] = ("major", "minor", "patch")
            return kind, steps[min(index, 2)]
    return kind, "pre-release" if (x.pre, x.post, x.dev) != (y.pre, y.post, y.dev) else None


def _cuda(a: Side, b: Side) -> LayerDiff:
    old = {c.name: c.version for c in a.cuda}
    new = {c.name: c.version for c in b.cuda}
    changes = _versions(old, new)
    changes += _consequences(a, b, old, new)
    note = None
    if not changes:
        note = "no CUDA on either side" if not old else plural(len(old), "component")
    return LayerDiff(layer="cuda", compared=True, changes=tuple(changes), note=note)


def cuda_release(components: Mapping[str, str]) -> str | None:
    """The CUDA release a stack is (major.minor): the toolkit's, else the runtime library's (12.1.105)."""
    version = components.get("cuda") or components.get("runtime")
    return ".".join(version.split(".")[:2]) if version else None


def _major(version: str | None) -> str | None:
    return version.split(".", 1)[0] if version else None


def _consequences(a: Side, b: Side, old: Mapping[str, str], new: Mapping[str, str]) -> list[Change]:
    """What a stack change means where it runs: another CUDA release or cuDNN major, another driver floor."""
    changes: list[Change] = []
    before, after = cuda_release(old), cuda_release(new)
    if before != after and before is not None and after is not None:
        kind, step = version_step(before, after)
        changes.append(
            Change(
                kind=kind,
                subject="CUDA release",
                a=before,
                b=after,
                step=step,
                detail="kernels built for one CUDA major do not run on the other"
                if step == "major"
                else None,
            )
        )
    x, y = _major(old.get("cudnn")), _major(new.get("cudnn"))
    if x is not None and y is not None and x != y:
        kind, _ = version_step(x, y)
        changes.append(
            Change(
                kind=kind,
                subject="cuDNN major",
                a=x,
                b=y,
                step="major",
                detail=f"libcudnn.so.{x} and libcudnn.so.{y} are not interchangeable: "
                f"code built against cuDNN {x} (custom ops, TensorRT engines) must be rebuilt",
            )
        )
    if a.driver_floor != b.driver_floor and (a.driver_floor or b.driver_floor):
        raised = b.driver_floor is not None and (
            a.driver_floor is None or version_compare(a.driver_floor, b.driver_floor) < 0
        )
        floor = b.driver_floor if raised else a.driver_floor
        detail = (
            f"B needs an NVIDIA driver >= {floor}: a host that runs A on an older driver cannot run B"
            if raised
            else f"B runs on older NVIDIA drivers than A, which needs >= {floor}"
        )
        if b.driver_floor is None:
            detail = "B needs no NVIDIA driver (no CUDA)"
        changes.append(
            Change(
                kind="raised" if raised else "lowered",
                subject="driver floor",
                a=a.driver_floor,
                b=b.driver_floor,
                detail=detail,
            )
        )
    return changes


def _models(a: Side, b: Side) -> LayerDiff:
    if a.models is None or b.models is None:
        return LayerDiff(
            layer="models",
            compared=False,
            note="an image states models only at the paths a lock names",
        )
    old, new = _comparable(a, b), _comparable(b, a)
    changes: list[Change] = []
    for path in sorted(set(old) | set(new)):
        x, y = old.get(path), new.get(path)
        if y is None or y.sha256 is None:
            changes.append(Change(kind="removed", subject=path, a=x.sha256 if x else None, b=None))
            continue
        if x is None or x.sha256 is None:
            changes.append(Change(kind="added", subject=path, a=None, b=y.sha256))
            continue
        if x.sha256 != y.sha256:
            changes.append(Change(kind="changed", subject=path, a=x.sha256, b=y.sha256))
        if x.strategy is not None and y.strategy is not None and x.strategy != y.strategy:
            changes.append(Change(kind="changed", subject=f"{path} strategy", a=x.strategy, b=y.strategy))
        if x.format is not None and y.format is not None and x.format != y.format:
            changes.append(Change(kind="changed", subject=f"{path} format", a=x.format, b=y.format))
        if x.producers is not None and y.producers is not None:
            changes += _producers(path, x.producers, y.producers)
        if x.format is not None and y.format is not None:
            changes += _loading(path, x.problems, y.problems)
    note = None if changes else plural(len(old), "model") if old else "no models on either side"
    return LayerDiff(layer="models", compared=True, changes=tuple(changes), note=note)


def _comparable(side: Side, other: Side) -> dict[str, ModelSide]:
    """A lock's models that an image could hold when the other side is one: the baked ones."""
    assert side.models is not None
    return {
        m.path: m
        for m in side.models
        if not (side.kind == "lock" and other.kind == "image" and m.strategy != "bake")
    }


def _problem_key(problem: ProducerProblem) -> tuple[str, str, str, str]:
    # Compared by what they say, not their wording: a lock's "the lock pins" is an image's "the image has".
    return (problem.severity, problem.library or "", problem.written or "", problem.pinned or "")


def _loading(path: str, old: tuple[ProducerProblem, ...], new: tuple[ProducerProblem, ...]) -> list[Change]:
    """A model the same on both sides may still not load on one: its writer's library moved there (the
    seed's 1.4 model under scikit-learn 1.3). Each reason one side has and the other has not."""
    x = {_problem_key(p): p for p in old}
    y = {_problem_key(p): p for p in new}
    changes: list[Change] = []
    for key in sorted(set(x) | set(y)):
        if key in x and key in y:
            continue
        problem = y.get(key) or x[key]
        changes.append(
            Change(
                kind="added" if key in y else "removed",
                subject=f"{path} load {'refusal' if problem.severity == 'refuse' else 'warning'}",
                a=problem.text if key in x else None,
                b=problem.text if key in y else None,
            )
        )
    return changes


def _producers(path: str, old: tuple[Producer, ...], new: tuple[Producer, ...]) -> list[Change]:
    """Which library (and version) wrote the model: a model written by another minor of its library may
    not load under the version the environment pins."""
    x = {p.library: p.version or "unrecorded" for p in old}
    y = {p.library: p.version or "unrecorded" for p in new}
    return [
        Change(
            kind=c.kind,
            subject=f"{path} written by {c.subject}",
            a=c.a,
            b=c.b,
            step=c.step,
        )
        for c in _versions(x, y)
    ]


# ---------------------------------------------------------------------------- how a diff reads

DIFF_VERSION = 1  # of the JSON shape below


def change_text(change: Change) -> str:
    """`pandas: upgraded 2.0.3 -> 2.1.4 (minor)`: the thing, which way it moved, both values."""
    if change.kind == "added":
        moved = f"added {change.b}"
    elif change.kind == "removed":
        moved = f"removed (A has {change.a})"
    else:
        moved = f"{change.kind} {change.a or 'none'} -> {change.b or 'none'}"
    step = f" ({change.step})" if change.step else ""
    detail = f"; {change.detail}" if change.detail else ""
    return f"{change.subject}: {moved}{step}{detail}"


def _summary(result: EnvDiff) -> str:
    changed = [layer for layer in result.layers if layer.changes]
    if not changed:
        return "A and B are the same in every layer both state"
    count = sum(len(layer.changes) for layer in changed)
    names = ", ".join(layer.layer for layer in changed)
    return f"A and B differ in {names} ({plural(count, 'change')})"


def _side_line(name: str, side: Side) -> str:
    return f"{name}: {side.subject} ({side.kind})"


def diff_text(result: EnvDiff) -> str:
    lines = [_side_line("A", result.a), _side_line("B", result.b)]
    if result.platform is not None:
        lines.append(f"platform: {result.platform}")
    for layer in result.layers:
        if not layer.compared:
            lines.append(f"{layer.layer}: not compared: {layer.note}")
            continue
        if not layer.changes:
            lines.append(f"{layer.layer}: same" + (f" ({layer.note})" if layer.note else ""))
            continue
        note = f"; {layer.note}" if layer.note else ""
        lines.append(f"{layer.layer}: {plural(len(layer.changes), 'change')}{note}")
        lines += [f"  {change_text(change)}" for change in layer.changes]
    lines.append(_summary(result))
    return "\n".join(lines) + "\n"


def _side_data(side: Side) -> dict[str, object]:
    return {"subject": side.subject, "kind": side.kind}


def diff_data(result: EnvDiff) -> dict[str, object]:
    """The diff as JSON data: each layer with its changes, each change with its fields."""
    return {
        "diff_version": DIFF_VERSION,
        "platform": result.platform,
        "a": _side_data(result.a),
        "b": _side_data(result.b),
        "equal": result.equal,
        "layers": [
            {
                "layer": layer.layer,
                "compared": layer.compared,
                "note": layer.note,
                "changes": [
                    {
                        "kind": c.kind,
                        "subject": c.subject,
                        "a": c.a,
                        "b": c.b,
                        "step": c.step,
                        "detail": c.detail,
                    }
                    for c in layer.changes
                ],
            }
            for layer in result.layers
        ],
    }


def _cell(value: str | None) -> str:
    """A markdown table cell: a pipe would end the cell (GitHub reads `\\|` as one, in code too) and a
    line break the row."""
    if not value:
        return ""
    return value.replace("|", "\\|").replace("\n", " ")


def _code(value: str | None) -> str:
    return f"`{_cell(value)}`" if value else ""


def diff_markdown(result: EnvDiff) -> str:
    """For a pull-request comment: a table per layer that changed, then what was the same or not compared."""
    lines = [
        "### mlenv diff",
        "",
        f"**A** {_code(result.a.subject)} ({result.a.kind}) → **B** {_code(result.b.subject)} "
        f"({result.b.kind}): {_summary(result)}",
    ]
    for layer in result.layers:
        if not layer.changes:
            continue
        lines += ["", f"#### {layer.layer}", ""]
        if layer.note:
            lines += [_cell(layer.note), ""]
        lines += ["| What | Change | A | B | Step | Note |", "|---|---|---|---|---|---|"]
        for c in layer.changes:
            cells = [_cell(c.subject), c.kind, _code(c.a), _code(c.b), c.step or "", _cell(c.detail)]
            lines.append("| " + " | ".join(cells) + " |")
    same = [
        f"{layer.layer}" + (f" ({_cell(layer.note)})" if layer.note else "")
        for layer in result.layers
        if layer.compared and not layer.changes
    ]
    unstated = [f"{layer.layer} ({_cell(layer.note)})" for layer in result.layers if not layer.compared]
    if same:
        lines += ["", "Same: " + "; ".join(same)]
    if unstated:
        lines += ["", "Not compared: " + "; ".join(unstated)]
    return "\n".join(lines) + "\n"
