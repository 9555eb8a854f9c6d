"""The ONE projection Lock -> what an image built from it holds, for one platform.

`image_contents` decides what is in the image: the base's own dpkg packages that the apt closure
leaves in place, the closure, the Python pins whose marker admits the platform (with the file
that installs there), the CUDA stack, the models, the interpreter and the labels. Each entry
carries both its fact (what verify compares) and what an SBOM names it by (package URL, sha256,
where it was fetched from). `expected_facts` is verify's view of it, and export's inventory is
built from the same entries, so an SBOM and a verify verdict cannot disagree about what the image
must contain.
"""

from __future__ import annotations

from dataclasses import dataclass

from packageurl import PackageURL
from packaging.markers import Marker
from packaging.tags import Tag

from mlenv.errors import ImageError
from mlenv.model.facts import AptFact, ArtifactFact, CudaComponent, DistFact, EnvFacts, InterpreterFact
from mlenv.model.labels import LABEL_BASE_DIGEST, LABEL_LOCK
from mlenv.model.lock import AptPin, BasePlatform, Lock, LockedBase, LockedModel, PythonFile, PythonPin
from mlenv.model.spec import DEFAULT_INDEX_URL
from mlenv.model.target import marker_environment, python_tuple, target_tags, wheel_installs

# Docker platform -> the architecture dpkg and os-release name it by.
DEB_ARCHITECTURES = {"linux/amd64": "amd64", "linux/arm64": "arm64"}


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    locked: LockedBase
    platform: BasePlatform | None  # None when the lock has no base for the platform described
    purl: str

    @property
    def digest(self) -> str:
        """The platform's own manifest (what the build pulled), else the index digest."""
        return self.platform.manifest_digest if self.platform else self.locked.digest


@dataclass(frozen=True, kw_only=True)
class Deb:
    fact: AptFact
    purl: str
    pin: AptPin | None = None  # None for a package of the base image itself
    download: str | None = None  # the .deb's URL on the lock's mirror

    @property
    def sha256(self) -> str | None:
        return self.pin.sha256 if self.pin else None


@dataclass(frozen=True, kw_only=True)
class Dist:
    fact: DistFact
    pin: PythonPin
    file: PythonFile | None  # the wheel that installs on the platform, else the sdist
    purl: str


@dataclass(frozen=True, kw_only=True)
class Cuda:
    fact: CudaComponent
    name: str  # the component's name as a package: "runtime" alone names nothing
    purl: str


@dataclass(frozen=True, kw_only=True)
class Model:
    locked: LockedModel

    @property
    def fact(self) -> ArtifactFact | None:
        """A baked model is a file of the image; one downloaded or mounted at start is not (yet)."""
        if self.locked.strategy != "bake":
            return None
        return ArtifactFact(path=self.locked.target, sha256=self.locked.sha256)

    @property
    def download(self) -> str | None:
        return self.locked.source if self.locked.remote else None


@dataclass(frozen=True, kw_only=True)
class ImageContents:
    """What an image built from the lock for `platform` holds. Every collection is sorted."""

    platform: str
    architecture: str  # as dpkg names it
    base: BaseImage | None
    base_packages: tuple[Deb, ...]  # the base's own packages that the closure does not replace
    apt: tuple[Deb, ...]  # the locked closure
    interpreter: InterpreterFact
    python: tuple[Dist, ...]
    cuda: tuple[Cuda, ...]
    models: tuple[Model, ...]  # every model of the lock, whatever its strategy
    labels: tuple[tuple[str, str], ...]  # the labels verify checks

    def facts(self) -> EnvFacts:
        """verify's expectation. It needs the locked base for the platform: its layers are the anchor."""
        if self.base is None:
            raise ImageError(
                "the lock has no base image to verify against; add [base] to the spec and re-lock"
            )
        base = self.base.platform
        if base is None:
            raise ImageError(
                f"the lock has no base for platform {self.platform}; it has "
                f"{', '.join(p.platform for p in self.base.locked.platforms)}"
            )
        apt = sorted((*self.base_packages, *self.apt), key=lambda d: (d.fact.name, d.fact.architecture))
        return EnvFacts(
            layer_diff_ids=base.diff_ids,
            os_id=base.os_id,
            os_version=base.os_version,
            architecture=self.architecture,
            glibc=base.glibc,
            interpreters=(self.interpreter,),
            apt=tuple(d.fact for d in apt),
            python_dists=tuple(d.fact for d in self.python),
            cuda=tuple(c.fact for c in self.cuda),
            artifacts=tuple(m.fact for m in self.models if m.fact is not None),
            labels=self.labels,
        )


def venv_site(lock: Lock) -> str:
    major, minor = python_tuple(lock.target.python)
    return f"{lock.python.venv}/lib/python{major}.{minor}/site-packages"


def expected_facts(lock: Lock, *, lock_digest: str, platform: str) -> EnvFacts:
    """What an image built from `lock` for `platform` must contain, as EnvFacts."""
    return image_contents(lock, platform, lock_digest=lock_digest).facts()


def image_contents(lock: Lock, platform: str, *, lock_digest: str) -> ImageContents:
    """Everything an image built from `lock` for `platform` holds (see the module docstring)."""
    base = next((p for p in lock.base.platforms if p.platform == platform), None) if lock.base else None
    distro = f"{base.os_id}-{base.os_version}" if base else None
    namespace = base.os_id if base else "debian"
    pins = lock.apt.packages
    major, minor = python_tuple(lock.target.python)
    tags = target_tags(lock.target, platform)
    environment = marker_environment(lock.target, platform)
    labels = [(LABEL_LOCK, lock_digest)]
    if lock.base is not None:
        labels.append((LABEL_BASE_DIGEST, lock.base.digest))
    return ImageContents(
        platform=platform,
        architecture=DEB_ARCHITECTURES.get(platform, platform),
        base=_base_image(lock.base, base) if lock.base else None,
        base_packages=tuple(
            Deb(fact=p, purl=_deb_purl(namespace, p, distro))
            for p in sorted(base.packages if base else (), key=lambda p: (p.name, p.architecture))
            # The closure replaces (upgrades) a base package of its name and architecture.
            if not any(pin.name == p.name and p.architecture in (pin.architecture, "all") for pin in pins)
        ),
        apt=tuple(
            _locked_deb(lock, pin, namespace, distro)
            for pin in sorted(pins, key=lambda p: (p.name, p.architecture))
        ),
        interpreter=InterpreterFact(
            path=f"{lock.python.venv}/bin/python{major}.{minor}", version=lock.target.python
        ),
        python=tuple(
            _dist(lock, pin, tags)
            for pin in sorted(lock.python.packages, key=lambda p: p.name)
            # The build's requirements keep each pin's marker, so pip skips a pin it excludes here.
            if pin.marker is None or Marker(pin.marker).evaluate(environment)
        ),
        cuda=tuple(_cuda(c) for c in sorted(lock.cuda.components, key=lambda c: (c.name, c.source))),
        models=tuple(Model(locked=m) for m in sorted(lock.models, key=lambda m: m.target)),
        labels=tuple(sorted(labels)),
    )


def _base_image(locked: LockedBase, platform: BasePlatform | None) -> BaseImage:
    qualifiers = {"repository_url": f"{locked.registry}/{locked.repository}"}
    if platform is not None:
        qualifiers["arch"] = DEB_ARCHITECTURES.get(platform.platform, platform.platform)
    digest = platform.manifest_digest if platform else locked.digest
    name = locked.repository.rsplit("/", 1)[-1]
    purl = PackageURL(type="oci", name=name, version=digest, qualifiers=qualifiers)
    return BaseImage(locked=locked, platform=platform, purl=purl.to_string())


def _deb_purl(namespace: str, fact: AptFact, distro: str | None) -> str:
    qualifiers = {"arch": fact.architecture}
    if distro:
        qualifiers["distro"] = distro
    return PackageURL(
        type="deb", namespace=namespace, name=fact.name, version=fact.version, qualifiers=qualifiers
    ).to_string()


def _locked_deb(lock: Lock, pin: AptPin, namespace: str, distro: str | None) -> Deb:
    fact = AptFact(name=pin.name, version=pin.version, architecture=pin.architecture)
    download = mirror_url(lock, pin.filename)
    return Deb(fact=fact, purl=_deb_purl(namespace, fact, distro), pin=pin, download=download)


def _dist(lock: Lock, pin: PythonPin, tags: frozenset[Tag]) -> Dist:
    qualifiers = {} if pin.index.rstrip("/") == DEFAULT_INDEX_URL else {"repository_url": pin.index}
    return Dist(
        fact=DistFact(name=pin.name, version=pin.version, site=venv_site(lock)),
        pin=pin,
        file=_installed_file(pin, tags),
        purl=PackageURL(type="pypi", name=pin.name, version=pin.version, qualifiers=qualifiers).to_string(),
    )


def _installed_file(pin: PythonPin, tags: frozenset[Tag]) -> PythonFile | None:
    """The wheel of `pin` that installs where `tags` do (what `mlenv build` installs), else the sdist."""
    wheel = next((w for w in sorted(pin.wheels, key=lambda w: w.name) if wheel_installs(w.name, tags)), None)
    return wheel or pin.sdist


def _cuda(component: CudaComponent) -> Cuda:
    name = "cuda-runtime" if component.name == "runtime" else component.name
    purl = PackageURL(type="generic", namespace="nvidia", name=name, version=component.version)
    return Cuda(fact=component, name=name, purl=purl.to_string())


def mirror_url(lock: Lock, filename: str) -> str | None:
    """Where the .deb `filename` (a pool path) was fetched from: the first apt source's mirror."""
    if not lock.apt.sources:
        return None
    mirror = min(lock.apt.sources, key=lambda s: (s.mirror, s.suite)).mirror
    return f"{mirror.rstrip('/')}/{filename}"
