"""OpenPGP keys made for a test run or a benchmark, and signing with them (gpg in a home of its own).

Test archives (Debian-, Ubuntu- and NVIDIA-layout) are signed with these; mlenv verifies them with gpgv
against the exported public key, as apt does with a distro's keyring."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Signs a Release: (data, detached) -> a clearsigned InRelease, or a detached armored signature.
Sign = Callable[[bytes, bool], bytes]


@dataclass(frozen=True)
class Key:
    fingerprint: str
    binary: bytes
    armored: bytes


def gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback", "--passphrase", "", *args],
        input=data,
        capture_output=True,
        check=True,
    ).stdout


def make_key(home: Path, name: str) -> Key:
    """A new ed25519 signing key in the new gpg home `home`."""
    home.mkdir(mode=0o700)
    gpg(home, "--quick-gen-key", f"{name} <{name}@mlenv.invalid>", "ed25519", "sign", "never")
    colons = gpg(home, "--with-colons", "--list-keys").decode()
    fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
    return Key(
        fingerprint=fingerprint, binary=gpg(home, "--export"), armored=gpg(home, "--armor", "--export")
    )


def signer(home: Path) -> Sign:
    """Signs a Release with the key in `home`: inline (InRelease) or detached and armored (Release.gpg)."""

    def sign(data: bytes, detached: bool) -> bytes:
        return (
            gpg(home, "--detach-sign", "--armor", data=data)
            if detached
            else gpg(home, "--clearsign", data=data)
        )

    return sign


def stop_agents(homes: tuple[Path, ...]) -> bool:
    """Stop the gpg-agents gpg started for `homes`; True once none is left."""
    for home in homes:
        if home.exists():
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)
    return agents_gone(homes)


def _agents(home: Path) -> list[int]:
    """The gpg-agent processes serving `home` (read from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # the process ended while we looked
        if argv and argv[0].endswith(b"gpg-agent") and str(home).encode() in argv:
            found.append(int(cmdline.parent.name))
    return found


def agents_gone(homes: tuple[Path, ...], *, seconds: float = 10.0) -> bool:
    """True once no gpg-agent serves any of `homes`: `gpgconf --kill` signals the agent and returns before
    it has exited (measured on a 2-core CI machine), so the check waits for the exit, up to a bound."""
    deadline = time.monotonic() + seconds
    while any(_agents(home) for home in homes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
