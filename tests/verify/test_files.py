"""verify.files: every path of every layer above the base accounted for, on hand-made layers."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mlenv.lockfile import loads
from mlenv.model.report import Drift, Report
from mlenv.observe.facts import combine, probe_interest
from mlenv.observe.fs.rootfs import LayerIndex, index_layer
from mlenv.observe.image.layerfiles import layer_entries
from mlenv.verify.accounting import with_files
from mlenv.verify.expected import step_files
from mlenv.verify.files import ContentCheck, FileView, Lookup, PycCheck, compare_files, file_view
from mlenv.verify.manifest import ExpectedFile, FoundFile

Member = tuple[str, str, bytes | str | None]  # (path, kind, content or link target)


def layer(*members: Member) -> LayerIndex:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, kind, data in members:
            info = tarfile.TarInfo(path)
            info.uid = info.gid = 0
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, str(data), 0o777
                archive.addfile(info)
            else:
                content = data if isinstance(data, bytes) else b""
                info.size, info.mode = len(content), 0o644
                archive.addfile(info, io.BytesIO(content))
    return index_layer(iter([buffer.getvalue()]), interest=lambda _path: True, threaded=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wanted(path: str, data: bytes, source: str = "wheel:x-1-py3-none-any.whl") -> ExpectedFile:
    return ExpectedFile(path=path, kind="file", source=source, sha256=sha(data), size=len(data), mode=0o644)


def view(*layers: LayerIndex, base: int = 1) -> FileView:
    return file_view(
        layers, base_layers=base, steps=["base", *[f"STEP {i}" for i in range(1, 9)]], keep=lambda _p: True
    )


def no_pyc(found: FoundFile, item: ExpectedFile, fview: FileView) -> str | None:
    raise AssertionError("no .pyc here")


def drifts(
    expected: Sequence[ExpectedFile],
    fview: FileView,
    *,
    checks: Mapping[str, ContentCheck] | None = None,
    pyc: PycCheck = no_pyc,
) -> list[Drift]:
    return compare_files(expected, fview, content_checks=checks or {}, pyc_check=pyc)


BASE = layer(
    ("etc", "dir", None),
    ("etc/passwd", "file", b"root:x:0:0\n"),
    ("usr", "dir", None),
    ("usr/lib", "dir", None),
    ("lib", "symlink", "usr/lib"),
    ("usr/lib/libc.so", "file", b"libc"),
)


def test_every_expected_file_in_place_is_no_drift() -> None:
    upper = layer(("opt", "dir", None), ("opt/a.py", "file", b"print(1)\n"))
    assert drifts([wanted("/opt/a.py", b"print(1)\n")], view(BASE, upper)) == []


def test_an_extra_file_names_its_path_layer_and_step() -> None:
    upper = layer(("opt", "dir", None), ("opt/a.py", "file", b"a"), ("opt/evil.pth", "file", b"import os"))
    (drift,) = drifts([wanted("/opt/a.py", b"a")], view(BASE, upper))
    assert (drift.layer, drift.kind, drift.subject) == ("files", "extra", "/opt/evil.pth")
    assert drift.actual == f"sha256:{sha(b'import os')} 9 bytes mode 0644 in layer 2 of 2 (STEP 1)"


def test_a_modified_file_shows_both_hashes() -> None:
    upper = layer(("opt", "dir", None), ("opt/a.py", "file", b"patched"))
    (drift,) = drifts([wanted("/opt/a.py", b"a")], view(BASE, upper))
    assert drift.kind == "modified" and drift.subject == "/opt/a.py"
    assert drift.expected is not None and sha(b"a") in drift.expected
    assert drift.actual is not None and sha(b"patched") in drift.actual and "layer 2 of 2" in drift.actual


def test_a_later_layer_overrides_an_earlier_one() -> None:
    first = layer(("opt", "dir", None), ("opt/a.py", "file", b"a"))
    second = layer(("opt", "dir", None), ("opt/a.py", "file", b"b"))
    (drift,) = drifts([wanted("/opt/a.py", b"a")], view(BASE, first, second))
    assert drift.kind == "modified" and "layer 3 of 3 (STEP 2)" in (drift.actual or "")


def test_a_missing_file_and_one_the_base_already_holds() -> None:
    upper = layer(("opt", "dir", None))
    found = drifts(
        [wanted("/opt/gone.py", b"x"), wanted("/usr/lib/libc.so", b"libc", "deb:libc6")], view(BASE, upper)
    )
    assert [(d.kind, d.subject) for d in found] == [("missing", "/opt/gone.py")]


def test_a_file_without_hash_or_size_never_matches_silently() -> None:
    upper = layer(("opt", "dir", None), ("opt/a", "file", b"a"))
    item = ExpectedFile(path="/opt/a", kind="file", source="step:x")
    assert [d.kind for d in drifts([item], view(BASE, upper))] == ["modified"]


def test_a_base_file_changed_through_an_upper_layer_is_shadowed() -> None:
    upper = layer(("etc", "dir", None), ("etc/passwd", "file", b"root:x:0:0\nevil:x:0:0\n"))
    (drift,) = drifts([], view(BASE, upper))
    assert (drift.kind, drift.subject) == ("shadowed", "/etc/passwd")
    assert sha(b"root:x:0:0\n") in (drift.expected or "") and "layer 2 of 2" in (drift.actual or "")


def test_a_base_file_written_again_unchanged_is_the_base_s() -> None:
    upper = layer(("etc", "dir", None), ("etc/passwd", "file", b"root:x:0:0\n"))
    assert drifts([], view(BASE, upper)) == []


def test_a_base_file_deleted_by_a_whiteout() -> None:
    upper = layer(("etc", "dir", None), ("etc/.wh.passwd", "file", b""))
    (drift,) = drifts([], view(BASE, upper))
    assert (drift.kind, drift.subject) == ("whiteout", "/etc/passwd")
    assert drift.actual == "removed in layer 2 of 2 (STEP 1)"


def test_an_opaque_directory_hides_the_base_s_contents() -> None:
    upper = layer(("etc", "dir", None), ("etc/.wh..wh..opq", "file", b""))
    assert [(d.kind, d.subject) for d in drifts([], view(BASE, upper))] == [("whiteout", "/etc/passwd")]


def test_expected_paths_are_resolved_through_the_base_s_symlinks() -> None:
    upper = layer(("usr", "dir", None), ("usr/lib", "dir", None), ("usr/lib/libgomp.so.1", "file", b"gomp"))
    assert drifts([wanted("/lib/libgomp.so.1", b"gomp", "deb:libgomp1")], view(BASE, upper)) == []


def test_a_wrong_kind_and_a_wrong_link_target() -> None:
    upper = layer(("opt", "dir", None), ("opt/python", "file", b"#!"), ("opt/py3", "symlink", "/tmp/evil"))
    items = [
        ExpectedFile(path="/opt/python", kind="symlink", source="step:venv", link="python3"),
        ExpectedFile(path="/opt/py3", kind="symlink", source="step:venv", link="/usr/bin/python3"),
    ]
    found = {d.subject: d for d in drifts(items, view(BASE, upper))}
    assert (found["/opt/python"].kind, found["/opt/python"].expected, found["/opt/python"].actual) == (
        "kind",
        "symlink",
        "file in layer 2 of 2 (STEP 1)",
    )
    assert (found["/opt/py3"].kind, found["/opt/py3"].expected) == ("link", "/usr/bin/python3")


def test_an_empty_directory_no_source_explains_is_extra() -> None:
    upper = layer(("opt", "dir", None), ("opt/a", "file", b"a"), ("srv", "dir", None))
    assert [(d.kind, d.subject) for d in drifts([wanted("/opt/a", b"a")], view(BASE, upper))] == [
        ("extra", "/srv")
    ]


def test_a_pyc_is_judged_by_the_pyc_check() -> None:
    upper = layer(("opt", "dir", None), ("opt/a.py", "file", b"a"), ("opt/a.pyc", "file", b"code"))
    seen = []

    def check(found: FoundFile, item: ExpectedFile, fview: FileView) -> str | None:
        seen.append((found.path, fview.content[found.path]))
        return "a timestamp pyc"

    item = ExpectedFile(path="/opt/a.pyc", kind="file", source="wheel:x", check="pyc", pyc_source="/opt/a.py")
    (drift,) = drifts([wanted("/opt/a.py", b"a", "wheel:x"), item], view(BASE, upper), pyc=check)
    assert seen == [("/opt/a.pyc", b"code")]
    assert (drift.kind, drift.subject) == ("pyc", "/opt/a.pyc") and "a timestamp pyc" in (drift.actual or "")


def test_generated_content_is_judged_by_its_rule_against_the_base() -> None:
    upper = layer(("etc", "dir", None), ("etc/passwd", "file", b"root:x:0:0\napp:x:10001:999\n"))
    item = ExpectedFile(path="/etc/passwd", kind="file", source="step:useradd", check="generated")

    def rule(found: bytes, base: Lookup, upper: Lookup) -> str | None:
        before = base("/etc/passwd") or b""
        return None if found == before + b"app:x:10001:999\n" else "not the base's plus the user"

    assert drifts([item], view(BASE, upper), checks={"/etc/passwd": rule}) == []
    tampered = layer(("etc", "dir", None), ("etc/passwd", "file", b"root:x:0:0\napp:x:0:0\n"))
    (drift,) = drifts([item], view(BASE, tampered), checks={"/etc/passwd": rule})
    assert drift.kind == "modified" and "not the base's plus the user" in (drift.actual or "")


def test_a_package_reinstalled_by_a_later_layer_is_one_drift() -> None:
    venv = layer(
        ("opt", "dir", None),
        ("opt/p", "dir", None),
        ("opt/p/m.py", "file", b"m"),
        ("opt/p/m.pyc", "file", b"checked"),
        ("opt/p.dist-info", "dir", None),
        ("opt/p.dist-info/RECORD", "file", b"rec"),
    )
    again = layer(
        ("opt", "dir", None),
        ("opt/p", "dir", None),
        ("opt/p/m.py", "file", b"m"),
        ("opt/p/m.pyc", "file", b"timestamp"),
        ("opt/p.dist-info", "dir", None),
        ("opt/p.dist-info/RECORD", "file", b"rec2"),
        ("opt/p.dist-info/direct_url.json", "file", b"{}"),
    )
    source = "wheel:p-1-py3-none-any.whl"
    items = [
        wanted("/opt/p/m.py", b"m", source),
        ExpectedFile(path="/opt/p/m.pyc", kind="file", source=source, check="pyc", pyc_source="/opt/p/m.py"),
        wanted("/opt/p.dist-info/RECORD", b"rec", source),
    ]

    def check(found: FoundFile, item: ExpectedFile, fview: FileView) -> str | None:
        return None if fview.content[found.path] == b"checked" else "a timestamp pyc"

    assert drifts(items, view(BASE, venv), pyc=check) == []
    (drift,) = drifts(items, view(BASE, venv, again), pyc=check)
    assert (drift.kind, drift.subject) == ("reinstalled", "p-1-py3-none-any.whl")
    assert drift.actual == (
        "installed again in layer 3 of 3 (STEP 2) into /opt:"
        " 1 .pyc not the checked-hash byte code, RECORD modified, direct_url.json added"
    )
    # A changed module in the same reinstall is still reported as what it is.
    patched = layer(
        ("opt", "dir", None),
        ("opt/p", "dir", None),
        ("opt/p/m.py", "file", b"evil"),
        ("opt/p/m.pyc", "file", b"timestamp"),
        ("opt/p.dist-info", "dir", None),
        ("opt/p.dist-info/RECORD", "file", b"rec2"),
    )
    kinds = sorted((d.kind, d.subject) for d in drifts(items, view(BASE, venv, patched), pyc=check))
    assert ("modified", "/opt/p/m.py") in kinds and ("reinstalled", "p-1-py3-none-any.whl") in kinds


# ---------------------------------------------------------------------------- mlenv's own steps

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "mlenv.lock"
BASE_PASSWD = b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
BASE_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def test_useradd_s_files_are_the_base_s_plus_the_locked_user() -> None:
    lock = loads(GOLDEN.read_text(), path=str(GOLDEN))
    files, checks = step_files(lock)
    assert {f.path for f in files} >= {"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/app"}
    base = {"/etc/passwd": BASE_PASSWD, "/etc/group": BASE_GROUP}
    group = BASE_GROUP + b"app:x:999:\n"
    upper = {"/etc/group": group}
    good = BASE_PASSWD + b"app:x:10001:999::/home/app:/usr/sbin/nologin\n"
    assert checks["/etc/passwd"](good, base.get, upper.get) is None
    assert {"/home/app", "/home/app/.cache"} <= {f.path for f in files if f.uid == 10001}
    # Not the HOME the step makes:
    homeless = BASE_PASSWD + b"app:x:10001:999::/nonexistent:/usr/sbin/nologin\n"
    assert checks["/etc/passwd"](homeless, base.get, upper.get) is not None
    assert checks["/etc/group"](group, base.get, upper.get) is None
    assert checks["/etc/passwd-"](BASE_PASSWD, base.get, upper.get) is None
    as_root = BASE_PASSWD + b"app:x:0:0::/home/app:/usr/sbin/nologin\n"
    assert checks["/etc/passwd"](as_root, base.get, upper.get) == (
        "last line 'app:x:0:0::/home/app:/usr/sbin/nologin' is not the locked user's"
    )
    two_users = good + b"evil:x:0:0::/root:/bin/sh\n"
    assert "not the base's /etc/passwd plus one line" in (
        checks["/etc/passwd"](two_users, base.get, upper.get) or ""
    )
    other_group = BASE_PASSWD + b"app:x:10001:0::/home/app:/usr/sbin/nologin\n"
    assert (
        checks["/etc/passwd"](other_group, base.get, upper.get)
        == "the user's group id 0 is not its group's (999)"
    )
    assert checks["/etc/passwd-"](good, base.get, upper.get) == "not the base's /etc/passwd"


def test_a_package_file_drift_is_reported_once_by_the_files_layer() -> None:
    site = "/opt/venv/lib/python3.11/site-packages"
    report = Report(
        subject="img",
        layers=("python", "python-files"),
        drifts=(
            Drift(layer="python-files", kind="modified", subject="six", file="six.py"),
            Drift(layer="python-files", kind="deleted", subject="six", file="../../../bin/six-tool"),
            Drift(layer="python-files", kind="modified", subject="other", file="other.py"),
        ),
    )
    files = [
        Drift(layer="files", kind="modified", subject=f"{site}/six.py", expected="a", actual="b"),
        Drift(layer="files", kind="missing", subject="/opt/venv/bin/six-tool", expected="a"),
        Drift(layer="files", kind="extra", subject=f"{site}/zz.pth", actual="c"),
    ]
    merged = with_files(report, files)
    assert [(d.layer, d.subject, d.file) for d in merged.drifts] == [
        ("python-files", "other", "other.py"),
        *[("files", d.subject, None) for d in files],
    ]
    assert merged.layers == ("python", "python-files", "files")


def test_a_pyc_hashed_to_its_expected_value_is_not_kept_in_memory() -> None:
    """The reader asks the interest again once a file is hashed: verify keeps a .pyc's bytes only when
    they are not already known good, so the venv's byte code is not held in memory whole."""
    good, bad = b"good pyc", b"swapped pyc"

    class Interest:
        def __call__(self, path: str) -> bool:
            return path.endswith(".pyc")

        def needed(self, path: str, digest: bytes) -> bool:
            return digest.hex() != sha(good)

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in (("a.pyc", good), ("b.pyc", bad), ("etc/os-release", b"ID=debian\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    for threaded in (False, True):
        index = index_layer(
            iter([buffer.getvalue()]), interest=combine(probe_interest, Interest()), threaded=threaded
        )
        kept = {e.path: e.content for e in layer_entries(index) if e.path != "/"}
        assert kept == {"/a.pyc": None, "/b.pyc": bad, "/etc/os-release": b"ID=debian\n"}


_NAMES = ("a", "b", "lib", "usr", ".", "..")


@settings(max_examples=300, deadline=None)
@given(
    links=st.dictionaries(
        st.lists(st.sampled_from(_NAMES[:4]), min_size=1, max_size=3).map(lambda p: "/" + "/".join(p)),
        st.tuples(st.booleans(), st.lists(st.sampled_from(_NAMES), min_size=0, max_size=3)).map(
            lambda t: ("/" if t[0] else "") + "/".join(t[1])
        ),
        max_size=6,
    ),
    paths=st.lists(st.lists(st.sampled_from(_NAMES), min_size=0, max_size=6), max_size=12),
)
def test_canonical_resolves_each_parent_once_and_the_same_as_from_the_root(
    links: dict[str, str], paths: list[list[str]]
) -> None:
    """canonical() remembers resolved parent directories; the answer must be exactly the walk from the
    root, for any symlinks (absolute, relative, dot-dot, loops) in the base or upper view."""
    view = FileView(layer_count=2, base_layers=1, steps=["", ""])
    for number, (path, target) in enumerate(sorted(links.items())):
        entry = FoundFile(
            path=path, kind="symlink", layer=1, size=0, sha256=None, mode=0o777, uid=0, gid=0, link=target
        )
        if number % 2:
            view.files[path] = entry
        else:
            view.base[path] = next(layer_entries(layer((path.lstrip("/"), "symlink", target))))
    for parts in paths * 2:  # asked twice: the second time from what was remembered
        path = "/" + "/".join(parts)
        assert view.canonical(path) == view._resolve(path)
