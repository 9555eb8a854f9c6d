"""verify accounts for every file above the base, on the real engine: the good fraud image and a no-op
`docker commit` of it match; each drifted image, derived from it with one change, is exit 1 with a
`files:` line naming the absolute path and the layer that holds it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mlenv.lockfile import loads
from mlenv.sources.cas import ContentStore
from tests.helpers import Built, derive_image, lock_tag, run_cli
from tools.localbase.dockerd import Daemon

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]

SITE = "/opt/venv/lib/python3.11/site-packages"
LAYER = r"in layer \d+ of \d+"


def verify(image: str, lock: Path) -> tuple[int, str]:
    result = run_cli("verify", image, "--lock", str(lock))
    assert result.code in (0, 1), result.stderr
    return result.code, result.stdout


def files_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith("files: ")]


def drifted(
    good: Built,
    daemon: Daemon,
    tmp_path: Path,
    variant: str,
    lines: list[str],
    scripts: dict[str, str] | None = None,
) -> str:
    """One change on top of the good image (the derived Dockerfile restores its user)."""
    context = tmp_path / variant
    context.mkdir()
    for name, text in (scripts or {}).items():
        (context / name).write_text(text)
    return derive_image(daemon, context, good.tag, lock_tag("fraud", good.lock, variant), lines)


def assert_drift(out: str, code: int, pattern: str) -> None:
    """exit 1 and a files line matching `pattern` that names a layer."""
    assert code == 1, out
    matching = [line for line in files_lines(out) if re.search(pattern, line)]
    assert matching, f"no files line matches {pattern!r}:\n{out}"
    assert all(re.search(LAYER, line) for line in matching), matching


# ---------------------------------------------------------------------------- what must match


def test_the_good_image_and_a_no_op_commit_match(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    code, out = verify(f"docker-daemon:{fraud_image.tag}", fraud_image.lock)
    assert code == 0, out
    assert "  [ok] files" in out
    container = docker_daemon.client.containers.create(fraud_image.tag)
    try:
        tag = lock_tag("fraud", fraud_image.lock, "no-op-commit")
        repository, _, version = tag.rpartition(":")
        container.commit(repository=repository, tag=version)
    finally:
        container.remove()
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 0, out
    archive = tmp_path / "good.tar"
    with archive.open("wb") as handle:
        for chunk in docker_daemon.client.images.get(fraud_image.tag).save(named=True):
            handle.write(chunk)
    code, out = verify(f"docker-archive:{archive}", fraud_image.lock)
    assert code == 0, out


def test_without_the_project_s_app_tree_the_app_copy_is_unverified(
    fraud_image: Built, tmp_path: Path
) -> None:
    lock = tmp_path / "mlenv.lock"
    shutil.copy(fraud_image.lock, lock)
    code, out = verify(f"docker-daemon:{fraud_image.tag}", lock)
    assert code == 1
    assert "files: /app/app: unverified: expected the project's app (app.copy)" in out


# ---------------------------------------------------------------------------- one drift per image


def test_a_file_added_inside_a_pinned_package(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    tag = drifted(
        fraud_image, docker_daemon, tmp_path, "pkg-extra", [f"RUN echo 'import os' > {SITE}/pandas/_evil.py"]
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(
        out,
        code,
        rf"files: {SITE}/pandas/_evil.py: extra \(found sha256:[0-9a-f]{{64}} ",
    )


def test_a_pth_beside_the_packages(fraud_image: Built, docker_daemon: Daemon, tmp_path: Path) -> None:
    tag = drifted(
        fraud_image,
        docker_daemon,
        tmp_path,
        "pth",
        [f"RUN echo 'import os; os.system(\"id\")' > {SITE}/zz-startup.pth"],
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(out, code, rf"files: {SITE}/zz-startup.pth: extra")
    # and a policy finding: site.py runs its import line at every interpreter start
    assert f"pth-import: {SITE}/zz-startup.pth: runs code at every interpreter start" in out, out


def test_a_changed_py(fraud_image: Built, docker_daemon: Daemon, tmp_path: Path) -> None:
    tag = drifted(
        fraud_image, docker_daemon, tmp_path, "py-changed", [f"RUN echo '# patched' >> {SITE}/six.py"]
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(
        out, code, rf"files: {SITE}/six.py: modified \(sha256:[0-9a-f]{{64}} \d+ bytes .*found sha256:"
    )
    # Reported once: by the files layer, not again as a file that does not match the image's RECORD.
    assert [line for line in out.splitlines() if "six.py" in line] == [
        line for line in out.splitlines() if line.strip().startswith(f"files: {SITE}/six.py: modified")
    ], out


def test_a_package_reinstalled_over_the_same_version(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    """pip (the base's, onto the venv) reinstalls the locked six wheel: the same files, rewritten with
    timestamp byte code, a new RECORD and a direct_url.json. One drift, naming the package, its site and
    what changed; no modified-file or pyc line about six."""
    lock = loads(fraud_image.lock.read_text(), path=str(fraud_image.lock))
    pin = next(p for p in lock.python.packages if p.name == "six")
    wheel = pin.wheels[0]
    cached = ContentStore().get(wheel.sha256)
    assert cached is not None, "the good image's verify put the locked wheel in the content store"
    context = tmp_path / "reinstalled"
    context.mkdir()
    shutil.copy(cached, context / wheel.name)
    tag = derive_image(
        docker_daemon,
        context,
        fraud_image.tag,
        lock_tag("fraud", fraud_image.lock, "reinstalled"),
        [
            f"COPY {wheel.name} /tmp/{wheel.name}",
            "RUN /usr/bin/python3 -m pip --python /opt/venv/bin/python install --force-reinstall"
            f" --no-deps --no-index /tmp/{wheel.name} && rm /tmp/{wheel.name}",
        ],
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(
        out,
        code,
        rf"files: {re.escape(wheel.name)}: reinstalled: expected installed once, in the venv step, .*"
        rf"found installed again {LAYER} \(RUN .*\) into {SITE}: .*RECORD modified",
    )
    about_six = [line for line in out.splitlines() if "six" in line and not line.strip().startswith("[")]
    assert len(about_six) == 1, out


FORGE_RECORD = r"""
import base64, hashlib, pathlib, sys
site = pathlib.Path(sys.argv[1])
target = site / "six.py"
target.write_bytes(target.read_bytes() + b"\nimport os\n")
data = target.read_bytes()
digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
record = next(site.glob("six-*.dist-info")) / "RECORD"
rows = [f"six.py,sha256={digest},{len(data)}" if r.startswith("six.py,") else r
        for r in record.read_text().splitlines()]
record.write_text("\n".join(rows) + "\n")
"""


def test_a_package_file_changed_with_its_record_line(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    tag = drifted(
        fraud_image,
        docker_daemon,
        tmp_path,
        "forged-record",
        ["COPY forge.py /tmp/forge.py", f"RUN /opt/venv/bin/python /tmp/forge.py {SITE} && rm /tmp/forge.py"],
        {"forge.py": FORGE_RECORD},
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(out, code, rf"files: {SITE}/six.py: modified")
    assert_drift(out, code, rf"files: {SITE}/six-1.16.0.dist-info/RECORD: modified")


SWAP_CODE = r"""
import importlib.util, marshal, sys
source = sys.argv[1]
pyc = importlib.util.cache_from_source(source)
header = open(pyc, "rb").read()[:16]
code = compile("import os\nos.system('id')\n", source, "exec")
open(pyc, "wb").write(header + marshal.dumps(code))
"""


def test_a_pyc_whose_code_was_swapped_under_its_header(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    tag = drifted(
        fraud_image,
        docker_daemon,
        tmp_path,
        "pyc-swapped",
        [
            "COPY swap.py /tmp/swap.py",
            f"RUN /opt/venv/bin/python /tmp/swap.py {SITE}/six.py && rm /tmp/swap.py",
        ],
        {"swap.py": SWAP_CODE},
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(
        out, code, rf"files: {SITE}/__pycache__/six.cpython-311.pyc: pyc: .*its code is not what its source"
    )


def test_a_timestamp_pyc(fraud_image: Built, docker_daemon: Daemon, tmp_path: Path) -> None:
    tag = drifted(
        fraud_image,
        docker_daemon,
        tmp_path,
        "pyc-timestamp",
        [
            "RUN /opt/venv/bin/python -c 'import py_compile as c; c.compile("
            f'"{SITE}/six.py", invalidation_mode=c.PycInvalidationMode.TIMESTAMP)\''
        ],
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(out, code, rf"files: {SITE}/__pycache__/six.cpython-311.pyc: pyc: .*a timestamp pyc")


def test_a_byte_changed_in_an_apt_package_s_file(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    tag = drifted(
        fraud_image, docker_daemon, tmp_path, "apt-byte", ["RUN printf 'x' >> /usr/share/doc/curl/copyright"]
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(out, code, r"files: /usr/share/doc/curl/copyright: modified \(sha256:[0-9a-f]{64} .*deb:")


def test_a_base_file_changed_through_an_upper_layer(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    tag = drifted(
        fraud_image, docker_daemon, tmp_path, "base-shadowed", ["RUN echo 'alias ls=id' >> /etc/bash.bashrc"]
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(out, code, r"files: /etc/bash.bashrc: shadowed: expected the base's sha256:[0-9a-f]{64}")


def test_a_base_file_deleted(fraud_image: Built, docker_daemon: Daemon, tmp_path: Path) -> None:
    tag = drifted(fraud_image, docker_daemon, tmp_path, "base-whiteout", ["RUN rm /etc/issue"])
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(
        out, code, r"files: /etc/issue: whiteout: expected the base's sha256:[0-9a-f]{64} .*found removed"
    )


def test_a_patched_app_main(fraud_image: Built, docker_daemon: Daemon, tmp_path: Path) -> None:
    tag = drifted(
        fraud_image, docker_daemon, tmp_path, "app-patched", ["RUN echo 'import os' >> /app/app/main.py"]
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(
        out, code, r"files: /app/app/main.py: modified \(sha256:[0-9a-f]{64} \d+ bytes .*from app:app/main.py"
    )


def test_secrets_added_to_app(fraud_image: Built, docker_daemon: Daemon, tmp_path: Path) -> None:
    tag = drifted(
        fraud_image,
        docker_daemon,
        tmp_path,
        "app-secrets",
        [
            "RUN echo 'AWS_SECRET_ACCESS_KEY=x' > /app/.env"
            " && echo '-----BEGIN PRIVATE KEY-----' > /app/key.pem"
        ],
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert_drift(out, code, r"files: /app/\.env: extra")
    assert_drift(out, code, r"files: /app/key\.pem: extra")


def test_a_changed_model(fraud_image: Built, docker_daemon: Daemon, tmp_path: Path) -> None:
    tag = drifted(
        fraud_image, docker_daemon, tmp_path, "model-changed", ["RUN printf 'x' >> /app/models/model.joblib"]
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 1
    # The models layer compares it with the lock's sha256; the files layer names the layer that changed it.
    assert "models: /app/models/model.joblib: modified" in out
    assert_drift(out, code, r"files: /app/models/model.joblib: modified \(sha256:[0-9a-f]{64} .*from model:")
