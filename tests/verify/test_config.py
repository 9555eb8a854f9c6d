"""The image config verify expects is what the rendered Dockerfile says, and each field that differs is
one drift naming the field, the expected and the found value."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

from mlenv.lockfile import loads, lock_digest
from mlenv.model.facts import ConfigFact, EnvFacts
from mlenv.model.lock import Lock
from mlenv.render import render
from mlenv.render.config import final_config, image_settings
from mlenv.verify.compare import compare, drift_line
from mlenv.verify.config import expected_config

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden"
BASE: dict[str, Any] = {
    "os": "linux",
    "architecture": "amd64",
    "config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "PYTHON_VERSION=3.11.9"],
        "Cmd": ["python3"],
        "Labels": {"org.opencontainers.image.title": "python", "maintainer": "base"},
        "StopSignal": "SIGTERM",
        "ExposedPorts": {"22/tcp": {}},
    },
}


def golden() -> tuple[Lock, str]:
    text = (GOLDEN / "mlenv.lock").read_text()
    return loads(text, path="mlenv.lock"), lock_digest(text.encode())


def final_stage_config(dockerfile: str, base: dict[str, Any]) -> dict[str, Any]:
    """What the engine makes of the final stage's config instructions, read from the Dockerfile text (a
    small model of the engine, independent of render/config.py)."""
    text = dockerfile.replace("\\\n", " ")
    stage = text[text.rindex("\nFROM ") :].splitlines()[1:]
    config = json.loads(json.dumps(base["config"]))
    env = dict(item.split("=", 1) for item in config.get("Env", []))
    for line in stage:
        word, _, rest = line.partition(" ")
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
        elif word == "USER":
            config["User"] = rest
        elif word == "WORKDIR":
            config["WorkingDir"] = rest
        elif word == "EXPOSE":
            config.setdefault("ExposedPorts", {})[f"{rest}/tcp"] = {}
        elif word == "VOLUME":
            for volume in json.loads(rest):
                config.setdefault("Volumes", {})[volume] = {}
        elif word == "LABEL":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                config.setdefault("Labels", {})[key] = value
        elif word == "HEALTHCHECK":
            options, _, command = rest.partition(" CMD ")
            seconds = {k.strip("-"): v for k, v in (o.split("=") for o in options.split())}
            config["Healthcheck"] = {
                "Test": ["CMD", *json.loads(command)],
                "Interval": int(seconds["interval"].rstrip("s")) * 10**9,
                "Timeout": int(seconds["timeout"].rstrip("s")) * 10**9,
                "StartPeriod": int(seconds["start-period"].rstrip("s")) * 10**9,
                "Retries": int(seconds["retries"]),
            }
        elif word == "ENTRYPOINT":
            config["Entrypoint"] = json.loads(rest)
            config["Cmd"] = None
        elif word == "CMD":
            config["Cmd"] = json.loads(rest)
    config["Env"] = [f"{k}={v}" for k, v in env.items()]
    return config


def test_the_expected_config_is_what_the_golden_dockerfile_says() -> None:
    lock, digest = golden()
    dockerfile = render(lock, lock_digest=digest, mlenv_version="1.2.3").get("Dockerfile").decode()
    engine = final_stage_config(dockerfile, BASE)
    expected = expected_config(lock, lock_digest=digest, platform="linux/amd64", base=BASE, built_by="1.2.3")
    assert expected.user == engine["User"] == "app"
    assert expected.cmd == tuple(engine["Cmd"])
    assert expected.entrypoint is None and "Entrypoint" not in engine
    assert dict(expected.env) == dict(e.split("=", 1) for e in engine["Env"])
    assert dict(expected.env)["PATH"].startswith("/opt/venv/bin:") and dict(expected.env)["LANG"] == "C.UTF-8"
    assert expected.working_dir == engine["WorkingDir"] == "/app"
    assert expected.exposed_ports == tuple(sorted(engine["ExposedPorts"])) == ("22/tcp", "8000/tcp")
    assert expected.healthcheck is not None
    health = engine["Healthcheck"]
    assert (expected.healthcheck.test, expected.healthcheck.interval) == (
        tuple(health["Test"]),
        health["Interval"],
    )
    assert (
        expected.healthcheck.timeout,
        expected.healthcheck.start_period,
        expected.healthcheck.retries,
    ) == (
        health["Timeout"],
        health["StartPeriod"],
        health["Retries"],
    )
    assert dict(expected.labels) == engine["Labels"]
    assert dict(expected.labels)["maintainer"] == "base"  # the base's labels are the image's too
    assert expected.stop_signal == "SIGTERM" and expected.volumes == ()
    assert (expected.os, expected.architecture) == ("linux", "amd64")


def test_an_entrypoint_clears_the_cmd_the_base_set() -> None:
    lock, digest = golden()
    settings = dataclasses.replace(
        image_settings(lock, lock_digest=digest, mlenv_version="1"), entrypoint=("/e",), cmd=None
    )
    assert final_config(settings, BASE, platform="linux/amd64").cmd is None
    settings = dataclasses.replace(settings, entrypoint=None)
    assert final_config(settings, BASE, platform="linux/amd64").cmd == ("python3",)


def report_lines(want: ConfigFact, have: ConfigFact) -> list[str]:
    report = compare(EnvFacts(config=want), EnvFacts(config=have), subject="image")
    return [drift_line(d) for d in report.drifts]


def test_each_config_field_is_one_drift_naming_both_values() -> None:
    lock, digest = golden()
    want = expected_config(lock, lock_digest=digest, platform="linux/amd64", base=BASE, built_by="1.2.3")
    assert report_lines(want, want) == []
    env = dict(want.env)
    env["PYTHONUNBUFFERED"] = "0"
    env["AWS_SECRET"] = "x"
    del env["LANG"]
    have = dataclasses.replace(
        want,
        user="root",
        cmd=("sh",),
        working_dir="/",
        env=tuple(sorted(env.items())),
        exposed_ports=(*want.exposed_ports, "9/tcp"),
        volumes=("/data",),
        stop_signal=None,
        labels=(*want.labels, ("team", "fraud")),
        healthcheck=None,
    )
    lines = report_lines(want, have)
    assert "config: User: expected app, found root" in lines
    assert 'config: Cmd: expected ["uvicorn", "app.main:app"], found ["sh"]' in lines
    assert "config: WorkingDir: expected /app, found /" in lines
    assert "config: Env PYTHONUNBUFFERED: expected 1, found 0" in lines
    # A credential's value is never shown: the drift names the variable and what it looks like.
    masked = "<masked: a value of a *_SECRET variable>"
    assert f"config: Env AWS_SECRET: extra (found {masked}, not in the lock)" in lines
    assert "config: Env LANG: missing (expected C.UTF-8)" in lines
    assert "config: ExposedPorts 9/tcp: extra (found 9/tcp, not in the lock)" in lines
    assert "config: Volumes /data: extra (found /data, not in the lock)" in lines
    assert "config: StopSignal: expected SIGTERM, found unset" in lines
    assert "config: Labels team: extra (found fraud, not in the lock)" in lines
    assert any(line.startswith('config: Healthcheck: expected {"interval": 30000000000') for line in lines)
    assert len(lines) == 11


def test_the_config_layer_is_listed_only_when_compared() -> None:
    assert "config" not in compare(EnvFacts(), EnvFacts(), subject="lock").layers
    assert "config" in compare(EnvFacts(config=ConfigFact()), EnvFacts(), subject="image").layers
