"""`mlenv inspect IMAGE`: what the observer reads from an image, like a package inventory."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from mlenv.cli.progress import for_command
from mlenv.export.redaction import mask_credentials
from mlenv.model.facts import EnvFacts, facts_data
from mlenv.observe import observe_image
from mlenv.verify.formats import DataFormat, parse_format


def facts_text(facts: EnvFacts) -> str:
    lines = [
        f"os: {facts.os_id} {facts.os_version} ({facts.architecture}), glibc {facts.glibc}",
        f"layers: {len(facts.layer_diff_ids)}",
    ]
    lines += [
        f"python: {i.path} {i.version}" + (f" (sites: {', '.join(i.sites)})" if i.sites else "")
        for i in facts.interpreters
    ]
    lines.append(f"apt packages: {len(facts.apt)}")
    lines += [f"  {p.name} {p.version} {p.architecture}" for p in facts.apt]
    lines.append(f"python distributions: {len(facts.python_dists)}")
    lines += [f"  {d.name} {d.version} ({d.site})" for d in facts.python_dists]
    lines += [f"cuda: {c.name} {c.version} ({c.source})" for c in facts.cuda]
    lines += [f"label: {k}={v}" for k, v in facts.labels]
    return "\n".join(lines) + "\n"


def inspect(
    image: Annotated[
        str, typer.Argument(help="docker-daemon:, docker-archive:, oci:, docker:// or a daemon name.")
    ],
    output_format: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
    platform: Annotated[str | None, typer.Option(help="Platform of a multi-platform image.")] = None,
) -> None:
    """Print what IMAGE contains (OS, apt packages, Python, CUDA, labels), read without running it."""
    chosen = parse_format(DataFormat, output_format)
    # An Env or Labels value holding a credential is shown masked, in text and JSON alike.
    with for_command():
        facts = mask_credentials(observe_image(image, platform=platform))
    if chosen is DataFormat.JSON:
        sys.stdout.write(json.dumps(facts_data(facts), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(facts_text(facts))
