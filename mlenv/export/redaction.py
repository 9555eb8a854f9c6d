"""Credentials never reach an export: every string of the inputs has URL user-info removed.

The lock writer already redacts index and mirror URLs, but a lock can be edited by hand and an
image's environment or labels can carry a URL with a password (PIP_INDEX_URL is the classic). So
the exporters are handed scrubbed copies of everything, and no exporter has to remember.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TypeVar

from mlenv.model.facts import EnvFacts
from mlenv.model.urls import redact
from mlenv.verify.credentials import masked

T = TypeVar("T")

# A URL inside free text ends at whitespace, a quote or an angle bracket.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")
# For a URL urlsplit cannot parse: drop whatever stands between "://" and the last "@" of the authority.
_USERINFO = re.compile(r"(://)[^/?#]*@")


def _redact_url(match: re.Match[str]) -> str:
    url = match.group()
    try:
        return redact(url)
    except ValueError:
        return _USERINFO.sub(r"\1", url, count=1)


def redact_text(text: str) -> str:
    """`pip from https://u:p@host/simple` -> `pip from https://host/simple`."""
    return _URL.sub(_redact_url, text) if "://" in text else text


def scrub(value: T) -> T:
    """A copy of `value` (a frozen dataclass tree of strings, tuples and nested dataclasses) with every
    string passed through `redact_text`."""
    if isinstance(value, str):
        return redact_text(value)  # type: ignore[return-value]
    if isinstance(value, tuple):
        return tuple(scrub(item) for item in value)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: scrub(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


def _masked_pairs(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((key, masked(key, value)) for key, value in pairs)


def mask_credentials(facts: EnvFacts) -> EnvFacts:
    """`facts` with every Env and Labels value that holds a credential (verify.credentials) masked:
    what inspect prints names the variable, never the secret."""
    config = facts.config
    if config is not None:
        config = dataclasses.replace(
            config, env=_masked_pairs(config.env), labels=_masked_pairs(config.labels)
        )
    return dataclasses.replace(
        facts, env=_masked_pairs(facts.env), labels=_masked_pairs(facts.labels), config=config
    )
