"""Credentials in an image's Env and Labels: what looks like one, and the value as a report may show it.

An image config is public to anyone who can pull the image (`docker inspect` prints it), so a key,
token or password set with ENV or LABEL is leaked by the image itself. verify reports each as a policy
finding naming the field; inspect, verify's drift lines and the exports show the field with its value
masked, never the value. Pure: no IO.
"""

from __future__ import annotations

import re

# scheme://user:password@host - a password in a URL (a bare user@host names no secret).
_URL_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")
# What the value itself gives away, whatever the variable is called.
_VALUES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), "a Google API key"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\"type\"\s*:\s*\"service_account\""), "a GCP service account key"),
    (re.compile(r"\b(ghp|gho|ghs|github_pat|glpat|xox[abp])[-_][0-9A-Za-z_-]{16,}"), "an access token"),
)
# What the name says: AWS_SECRET_ACCESS_KEY, HF_TOKEN, DB_PASSWORD, a label `ci.api-key`.
_NAME = re.compile(
    r"(^|[_.-])(TOKEN|SECRET|PASSWORD|PASSWD|PASS|CREDENTIALS?"
    r"|API[_.-]?KEY|ACCESS[_.-]?KEY|PRIVATE[_.-]?KEY)$",
    re.IGNORECASE,
)


def credential(key: str, value: str) -> str | None:
    """What credential `key=value` (an Env variable or a label) holds, as a phrase; None for none.
    A name that says secret with an empty value holds nothing."""
    if _URL_PASSWORD.search(value):
        return "a user:password@ URL"
    for pattern, what in _VALUES:
        if pattern.search(value):
            return what
    match = _NAME.search(key)
    if match and value.strip():
        return f"a value of a *{match.group(0).upper()} variable"
    return None


def masked(key: str, value: str) -> str:
    """`value` as it may be shown: unchanged, or a placeholder that says what it is when it is a
    credential. The placeholder holds no part of the value (not even a length)."""
    what = credential(key, value)
    return value if what is None else f"<masked: {what}>"
