"""What `mlenv lock --check` loads, and that the plain option coercion (mlenv.cli.coerce) gives every
command the values typer's own coercion gives. Timing is bench/startup.py's job; these check the
structure the numbers rest on, which a new top-level import would break silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from mlenv.cli import app as cli_app
from mlenv.cli.coerce import use_plain_values

SPEC = 'name = "startup"\n\n[target]\npython = "3.11.2"\nglibc = "2.36"\n'

# What `lock --check` has no use for: the resolver and its layers, the observer, the network clients,
# pydantic (typer's adapters), the progress display.
NOT_FOR_CHECK = (
    "pydantic",
    "typer._adapters",
    "mlenv.resolve.lock",
    "mlenv.resolve.apt",
    "mlenv.resolve.base",
    "mlenv.resolve.cuda",
    "mlenv.observe",
    "mlenv.sources.registry",
    "rich.progress",
    "requests",
    "docker",
    "importlib.metadata",
)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with no Python requirements, locked by the CLI (no index is asked)."""
    project = tmp_path_factory.mktemp("startup")
    (project / "mlenv.toml").write_text(SPEC)
    subprocess.run([sys.executable, "-m", "mlenv", "lock", str(project)], check=True, capture_output=True)
    return project


def test_lock_check_loads_no_resolver_observer_or_pydantic(locked: Path) -> None:
    probe = (
        "import sys\nfrom mlenv.cli.app import main\n"
        f"try:\n    main(['lock', '--check', {str(locked)!r}])\nexcept SystemExit as done:\n"
        "    print('exit', done.code)\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    verdict, loaded_line = result.stdout.strip().splitlines()[-2:]
    assert "is up to date" in result.stdout
    assert verdict == "exit 0"
    loaded = set(loaded_line.split())
    assert "mlenv.resolve.freshness" in loaded  # the check ran
    wrong = sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in NOT_FOR_CHECK))
    assert wrong == []


def test_lock_check_still_finds_a_stale_lock(locked: Path, tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "mlenv.lock").write_bytes((locked / "mlenv.lock").read_bytes())
    (project / "mlenv.toml").write_text(SPEC.replace('"startup"', '"renamed"'))
    result = subprocess.run(
        [sys.executable, "-m", "mlenv", "lock", "--check", str(project)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert 'name: the lock says "startup", mlenv.toml says "renamed"' in result.stderr


# Argument vectors for every command: values given and left out, lists, paths that exist and not.
ARGS = {
    "lock": [
        [],
        ["proj", "--check", "-f", "json"],
        ["-l", "x.lock", "-P", "numpy", "-P", "pandas==2.2.3", "--upgrade-apt", "curl", "-U"],
    ],
    "build": [["proj", "--tag", "t:1", "--no-cache", "--no-verify"], []],
    "verify": [["img", "-l", "x.lock", "--platform", "linux/amd64"], ["img"]],
    "inspect": [["img", "-f", "json"]],
    "check": [[], ["--python", "python3", "-l", "proj", "--files"]],
    "diff": [["a", "b", "-f", "markdown"]],
    "export": [["-f", "requirements", "proj", "-o", "-"], ["-f", "pylock"]],
    "init": [[], ["proj", "--force"]],
    "dockerfile": [["proj", "-o", "out"], []],
}


def _params(command_name: str, args: list[str], plain: bool) -> dict[str, object]:
    cli_app.register_commands([command_name])
    group = typer.main.get_command(cli_app.app)
    if plain:
        use_plain_values(group)
    command = group.commands[command_name]  # type: ignore[attr-defined]
    with command.make_context(command_name, list(args), parent=None) as context:
        return dict(context.params)


@pytest.mark.parametrize(
    ("command_name", "args"),
    [(name, args) for name, vectors in ARGS.items() for args in vectors],
    ids=lambda value: value if isinstance(value, str) else " ".join(value) or "(none)",
)
def test_plain_coercion_gives_what_typer_gives(
    command_name: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "proj").mkdir()
    if command_name not in cli_app.COMMANDS:
        pytest.skip(f"no command {command_name} in this tree")
    try:
        typer_values = _params(command_name, args, plain=False)
    except Exception as error:  # a vector this command does not take: both must refuse it alike
        with pytest.raises(type(error)):
            _params(command_name, args, plain=True)
        return
    plain_values = _params(command_name, args, plain=True)
    assert plain_values == typer_values
    assert {k: type(v) for k, v in plain_values.items()} == {k: type(v) for k, v in typer_values.items()}
