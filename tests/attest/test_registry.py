"""`mlenv attest` on the loopback registry (distribution 2.8: no referrers API, so the fallback tag), read
back with clients that are not mlenv's: oras for the registry, securesystemslib for the signature.

The tampered attestations are made here by hand with requests (blobs, manifests, the fallback index), each
on a repository of its own holding the good image's bytes (the same digest: tags, and so fallback indexes,
are per repository), so each `verify --attestation` sees only the one forgery.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import oras.provider
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

from mlenv.attest import referrers
from mlenv.attest.keys import load_private_key
from mlenv.lockfile import lock_digest
from mlenv.model.schema import load_schema
from mlenv.sources.registry import ImageReference, RegistryClient
from tests.helpers import Built, CliResult, run_cli
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage, push_image
from tools.localbase.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]

PASSWORD = "team passphrase 1"
VERIFY = "https://mlenv.dev/attestations/verify/v1"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path
    other_private: Path
    other_public: Path


@dataclass(frozen=True)
class Setup:
    registry: Registry
    fraud: Built
    digest: str  # the good image's manifest digest in every repository it was pushed to
    other_digest: str  # the base image's, in mlenv-test/attest-other
    keys: Keys
    outputs: list[str]  # every stdout and stderr of a CLI run here, searched for key bytes at the end


def env() -> dict[str, str]:
    return {**os.environ, "MLENV_KEY_PASSWORD": PASSWORD}


def cli(setup: Setup, *args: str) -> CliResult:
    result = run_cli(*args, env=env())
    setup.outputs.extend((result.stdout, result.stderr))
    return result


@pytest.fixture(scope="module")
def setup(
    fraud_image: Built,
    base_image_python: BaseImage,
    docker_daemon: Daemon,
    registry: Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Setup:
    folder = tmp_path_factory.mktemp("keys")
    for name in ("team", "other"):
        made = run_cli("keygen", str(folder / name), env=env())
        assert made.code == 0, made.stderr
    keys = Keys(folder / "team.key", folder / "team.pub", folder / "other.key", folder / "other.pub")
    repositories = [
        "attest",
        "tamper-payload",
        "tamper-key",
        "plain",
        "race",
        "hostile",
    ]
    digests = {
        push_image(docker_daemon.client, fraud_image.tag, registry.host, f"mlenv-test/{name}", "good")
        for name in repositories
    }
    assert len(digests) == 1  # the same image in each repository
    others = {
        push_image(docker_daemon.client, base_image_python.local, registry.host, f"mlenv-test/{name}", "1")
        for name in ("attest-other", "att-other")
    }
    assert len(others) == 1
    other = others.pop()
    return Setup(registry, fraud_image, digests.pop(), other, keys, [])


def image(setup: Setup, repository: str, tag: str = "good") -> str:
    return f"docker://{setup.registry.host}/mlenv-test/{repository}:{tag}"


def attest(setup: Setup, repository: str, key: Path | None = None) -> CliResult:
    return cli(
        setup,
        "attest",
        image(setup, repository),
        "--key",
        str(key or setup.keys.private),
        "--lock",
        str(setup.fraud.lock),
    )


def check(setup: Setup, reference: str, public: Path | None = None, lock: Path | None = None) -> CliResult:
    return cli(
        setup,
        "verify",
        reference,
        "--attestation",
        "--key",
        str(public or setup.keys.public),
        "--lock",
        str(lock or setup.fraud.lock),
    )


# ------------------------------------------------------------------------------------- an independent client


def oras_registry(setup: Setup) -> oras.provider.Registry:
    return oras.provider.Registry(hostname=setup.registry.host, insecure=True)


def fallback_index(setup: Setup, repository: str, digest: str) -> dict[str, Any]:
    found = oras_registry(setup).get_manifest(
        f"{setup.registry.host}/mlenv-test/{repository}:{digest.replace(':', '-')}",
        allowed_media_type=[OCI_INDEX],
    )
    assert found["mediaType"] == OCI_INDEX
    return found


def artifact(setup: Setup, repository: str, digest: str) -> tuple[dict[str, Any], bytes]:
    """An attestation's manifest and its envelope's bytes, read with oras, their digests checked here."""
    registry = oras_registry(setup)
    container = f"{setup.registry.host}/mlenv-test/{repository}@{digest}"
    manifest = registry.get_manifest(container, allowed_media_type=[OCI_MANIFEST])
    layer = manifest["layers"][0]
    blob = registry.get_blob(container, layer["digest"]).content
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
    return manifest, blob


def sslib_key(public: Path) -> SSlibKey:
    pem = serialization.load_pem_public_key(public.read_bytes()).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SSlibKey("", "ecdsa", "ecdsa-sha2-nistp256", {"public": pem.decode()})


def opened(envelope: bytes, public: Path) -> dict[str, Any]:
    """The statement inside `envelope` once securesystemslib has checked its signature with `public`."""
    parsed = Envelope.from_dict(json.loads(envelope))
    parsed.verify([sslib_key(public)], 1)
    assert parsed.payload_type == "application/vnd.in-toto+json"
    return json.loads(parsed.payload)


def put_blob(setup: Setup, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    base = f"{setup.registry.url}/v2/mlenv-test/{repository}"
    start = requests.post(f"{base}/blobs/uploads/", timeout=30)
    assert start.status_code == 202
    done = requests.put(
        requests.compat.urljoin(base + "/", start.headers["Location"]),
        params={"digest": digest},
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert done.status_code == 201, done.text
    return digest


def put_manifest(
    setup: Setup, repository: str, reference: str, document: dict[str, Any], media_type: str
) -> str:
    raw = json.dumps(document).encode()
    answer = requests.put(
        f"{setup.registry.url}/v2/mlenv-test/{repository}/manifests/{reference}",
        data=raw,
        headers={"Content-Type": media_type},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def plant(
    setup: Setup, repository: str, subject_digest: str, manifest: dict[str, Any], envelope: bytes
) -> None:
    """Store `manifest` (its layer the `envelope`) in `repository` and make it the only entry of the
    fallback index of `subject_digest` there: what an attacker with push rights can do."""
    put_blob(setup, repository, b"{}")
    layer = put_blob(setup, repository, envelope)
    manifest = json.loads(json.dumps(manifest))
    manifest["layers"][0].update(digest=layer, size=len(envelope))
    digest = put_manifest(
        setup,
        repository,
        "sha256:" + hashlib.sha256(json.dumps(manifest).encode()).hexdigest(),
        manifest,
        OCI_MANIFEST,
    )
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(json.dumps(manifest).encode()),
                "artifactType": "application/vnd.in-toto+json",
                "annotations": {"in-toto.io/predicate-type": VERIFY},
            }
        ],
    }
    put_manifest(setup, repository, subject_digest.replace(":", "-"), index, OCI_INDEX)


@pytest.fixture(scope="module")
def attested(setup: Setup) -> dict[str, str]:
    """`mlenv attest` of the good image in mlenv-test/attest: kind -> the artifact's digest."""
    made = attest(setup, "attest")
    assert made.code == 0, made.stderr
    return dict(line.split(" ") for line in made.stdout.splitlines())


def good_verify_artifact(setup: Setup, attested: dict[str, str]) -> tuple[dict[str, Any], bytes]:
    index = fallback_index(setup, "attest", setup.digest)
    assert attested["verify"] in {e["digest"] for e in index["manifests"]}
    entry = next(e for e in index["manifests"] if e["annotations"]["in-toto.io/predicate-type"] == VERIFY)
    return artifact(setup, "attest", entry["digest"])


def refused(result: CliResult, *words: str) -> None:
    assert result.code == 1, (result.code, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mlenv: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------------------ tests


def test_attest_then_read_back_with_oras_and_securesystemslib(setup: Setup, attested: dict[str, str]) -> None:
    kinds = attested
    assert set(kinds) == {"verify", "provenance", "sbom"}
    index = fallback_index(setup, "attest", setup.digest)
    listed = {e["digest"]: e for e in index["manifests"]}
    assert set(kinds.values()) <= set(listed)
    lock_sha256 = lock_digest(setup.fraud.lock.read_bytes()).removeprefix("sha256:")
    types = {}
    for kind, digest in kinds.items():
        assert listed[digest]["artifactType"] == "application/vnd.in-toto+json"
        manifest, envelope = artifact(setup, "attest", digest)
        assert manifest["subject"]["digest"] == setup.digest
        assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
        statement = opened(envelope, setup.keys.public)
        assert statement["_type"] == "https://in-toto.io/Statement/v1"
        assert statement["subject"] == [
            {
                "name": f"{setup.registry.host}/mlenv-test/attest",
                "digest": {"sha256": setup.digest.removeprefix("sha256:")},
            }
        ]
        types[kind] = statement["predicateType"]
        predicate = statement["predicate"]
        if kind == "verify":
            jsonschema.validate(statement, load_schema("verify-attestation"))
            assert predicate["lock"]["sha256"] == lock_sha256 and predicate["verdict"] == "match"
            assert predicate["drifts"] == []
        elif kind == "provenance":
            external = predicate["buildDefinition"]["externalParameters"]
            assert external["lock"]["digest"]["sha256"] == lock_sha256
            uris = {d.get("uri", "") for d in predicate["buildDefinition"]["resolvedDependencies"]}
            assert any(uri.startswith("oci://") for uri in uris) and any(uri.endswith(".whl") for uri in uris)
        else:
            assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(predicate)) is None
    assert types == {
        "verify": VERIFY,
        "provenance": "https://slsa.dev/provenance/v1",
        "sbom": "https://cyclonedx.org/bom",
    }
    # cosign's layout too (what Kyverno reads): the `.att` manifest, one envelope layer per statement
    att = oras_registry(setup).get_manifest(
        f"{setup.registry.host}/mlenv-test/attest:{setup.digest.replace(':', '-')}.att",
        allowed_media_type=[OCI_MANIFEST],
    )
    assert {layer["annotations"]["predicateType"] for layer in att["layers"]} == set(types.values())
    config = json.loads(
        oras_registry(setup)
        .get_blob(f"{setup.registry.host}/mlenv-test/attest@{setup.digest}", att["config"]["digest"])
        .content
    )
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in att["layers"]]
    for layer in att["layers"]:
        assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
        blob = oras_registry(setup).get_blob(
            f"{setup.registry.host}/mlenv-test/attest@{setup.digest}", layer["digest"]
        )
        statement = opened(blob.content, setup.keys.public)
        assert statement["predicateType"] == layer["annotations"]["predicateType"]
    # the same check by mlenv, by tag and by digest
    for reference in (
        image(setup, "attest"),
        f"docker://{setup.registry.host}/mlenv-test/attest@{setup.digest}",
    ):
        shown = check(setup, reference)
        assert shown.code == 0, shown.stderr
        assert shown.stdout.startswith(
            f"{setup.registry.host}/mlenv-test/attest@{setup.digest}: attestation "
        )
        assert shown.stdout.rstrip().endswith("match")


def test_a_changed_payload_is_refused(setup: Setup, attested: dict[str, str]) -> None:
    manifest, envelope = good_verify_artifact(setup, attested)
    parsed = json.loads(envelope)
    statement = json.loads(base64.b64decode(parsed["payload"]))
    statement["predicate"]["drifts"] = []  # the same verdict, other bytes: the signature no longer holds
    statement["predicate"]["platform"] = "linux/arm64"
    parsed["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    plant(setup, "tamper-payload", setup.digest, manifest, json.dumps(parsed).encode())
    refused(check(setup, image(setup, "tamper-payload")), "no signature verifies")


def test_a_swapped_subject_is_refused(setup: Setup, attested: dict[str, str]) -> None:
    # The good attestation's manifest re-pointed at another image: its signed statement still names the first.
    manifest, envelope = good_verify_artifact(setup, attested)
    swapped = dict(manifest, subject=dict(manifest["subject"], digest=setup.other_digest))
    plant(setup, "attest-other", setup.other_digest, swapped, envelope)
    refused(check(setup, image(setup, "attest-other", "1")), f"not for {setup.other_digest}")


def test_an_attestation_copied_onto_another_image_is_refused(setup: Setup, attested: dict[str, str]) -> None:
    # Unchanged, manifest and all, listed in the other image's index.
    manifest, envelope = good_verify_artifact(setup, attested)
    plant(setup, "attest-other", setup.other_digest, manifest, envelope)
    refused(check(setup, image(setup, "attest-other", "1")), "not to this image")


def test_a_cosign_layer_copied_onto_another_image_is_refused(setup: Setup, attested: dict[str, str]) -> None:
    tag = setup.digest.replace(":", "-") + ".att"
    att = oras_registry(setup).get_manifest(
        f"{setup.registry.host}/mlenv-test/attest:{tag}", allowed_media_type=[OCI_MANIFEST]
    )
    for layer in att["layers"]:
        blob = oras_registry(setup).get_blob(
            f"{setup.registry.host}/mlenv-test/attest@{setup.digest}", layer["digest"]
        )
        put_blob(setup, "att-other", blob.content)
    config = json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in att["layers"]]}}
    ).encode()
    copied = dict(
        att,
        config={
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put_blob(setup, "att-other", config),
            "size": len(config),
        },
    )
    put_manifest(setup, "att-other", setup.other_digest.replace(":", "-") + ".att", copied, OCI_MANIFEST)
    refused(check(setup, image(setup, "att-other", "1")), f"not for {setup.other_digest}")


def test_another_key_another_lock_and_no_attestation_are_refused(
    setup: Setup, attested: dict[str, str], tmp_path: Path
) -> None:
    made = attest(setup, "tamper-key", setup.keys.other_private)
    assert made.code == 0, made.stderr
    refused(check(setup, image(setup, "tamper-key")), "no signature verifies")
    assert check(setup, image(setup, "tamper-key"), public=setup.keys.other_public).code == 0
    other_lock = tmp_path / "mlenv.lock"
    other_lock.write_bytes(setup.fraud.lock.read_bytes() + b"\n")
    refused(check(setup, image(setup, "attest"), lock=other_lock), "made for the lock")
    refused(check(setup, image(setup, "plain")), "no mlenv verify attestation", "fallback tag", ".att")


def test_two_attests_at_once_both_survive(setup: Setup) -> None:
    command = [
        sys.executable,
        "-m",
        "mlenv",
        "attest",
        image(setup, "race"),
        "--key",
        str(setup.keys.private),
        "--lock",
        str(setup.fraud.lock),
    ]
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        for _ in range(2)
    ]
    results = [run.communicate(timeout=600) for run in runs]
    for run, (out, err) in zip(runs, results, strict=True):
        setup.outputs.extend((out, err))
        assert run.returncode == 0, err
    made = {line.split(" ")[1] for out, _ in results for line in out.splitlines()}
    assert len(made) == 6  # ECDSA signatures differ, so every envelope (and artifact) is new
    listed = {e["digest"] for e in fallback_index(setup, "race", setup.digest)["manifests"]}
    assert made <= listed


def test_the_fallback_guard_keeps_both_when_two_writers_read_the_same_index(setup: Setup) -> None:
    """Forced interleaving on the real registry: both writers read the index before either writes, the
    lost update a plain read-modify-write makes. The re-check after writing puts the lost entry back."""
    ref = ImageReference.parse(f"{setup.registry.host}/mlenv-test/race:good")
    both_read = threading.Barrier(2, timeout=30)

    class SlowReader(RegistryClient):
        first = True

        def find_manifest(self, ref: ImageReference, reference: str):  # type: ignore[no-untyped-def]
            found = super().find_manifest(ref, reference)
            if self.first:
                self.first = False
                both_read.wait()
            return found

    written: dict[int, str] = {}
    failures: list[BaseException] = []

    def write(number: int) -> None:
        try:
            client = SlowReader()
            subject = referrers.subject_of(client, ref)
            # A real artifact (distribution refuses an index naming a manifest it does not hold).
            envelope = json.dumps({"race": number}).encode()
            client.push_blob(ref, "sha256:" + hashlib.sha256(b"{}").hexdigest(), b"{}")
            client.push_blob(ref, "sha256:" + hashlib.sha256(envelope).hexdigest(), envelope)
            raw = referrers.artifact_manifest(subject, envelope, VERIFY)
            digest = client.push_manifest(ref, "sha256:" + hashlib.sha256(raw).hexdigest(), raw, OCI_MANIFEST)
            written[number] = digest
            descriptor = {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(raw),
                "artifactType": "application/vnd.in-toto+json",
            }
            referrers.add_to_fallback(client, subject, descriptor)
        except BaseException as error:  # reported by the assertion below, not as a thread warning
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    listed = {e["digest"] for e in fallback_index(setup, "race", setup.digest)["manifests"]}
    assert set(written.values()) <= listed and len(written) == 2


def test_no_private_key_byte_in_any_output_or_stored_object(setup: Setup, attested: dict[str, str]) -> None:
    # A failing run with -v (a traceback allowed) adds its output to what is searched.
    cli(
        setup,
        "-v",
        "attest",
        "docker://127.0.0.1:9/none/x:1",
        "--key",
        str(setup.keys.private),
        "--lock",
        str(setup.fraud.lock),
    )
    wrong = run_cli(
        "-v",
        "attest",
        image(setup, "attest"),
        "--key",
        str(setup.keys.private),
        "--lock",
        str(setup.fraud.lock),
        env={**os.environ, "MLENV_KEY_PASSWORD": "wrong"},
    )
    assert wrong.code == 2 and "wrong passphrase" in wrong.stderr
    setup.outputs.extend((wrong.stdout, wrong.stderr))
    key = load_private_key(setup.keys.private, PASSWORD.encode())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem_text = setup.keys.private.read_text()
    body = "".join(pem_text.splitlines()[1:-1])
    needles_text = [
        scalar.hex(),
        base64.b64encode(scalar).decode(),
        base64.b64encode(der).decode()[:40],
        der.hex()[:64],
    ]
    needles_text += [body[i : i + 24] for i in range(0, len(body) - 24, 24)]
    needles_bytes = [scalar, der, *(n.encode() for n in needles_text)]
    assert setup.outputs
    for output in setup.outputs:
        for needle in needles_text:
            assert needle not in output
    # every object the registry holds for the attested image: the index, each manifest, each blob
    index = fallback_index(setup, "attest", setup.digest)
    stored = [json.dumps(index).encode()]
    for entry in index["manifests"]:
        manifest, envelope = artifact(setup, "attest", entry["digest"])
        stored += [json.dumps(manifest).encode(), envelope, base64.b64decode(json.loads(envelope)["payload"])]
    for data in stored:
        for needle in needles_bytes:
            assert needle not in data


def test_build_push_attest_attaches_the_builds_verdict_to_the_pushed_digest(setup: Setup) -> None:
    tag = f"{setup.registry.host}/mlenv-test/built:1"
    built = cli(
        setup,
        "build",
        str(setup.fraud.project),
        "--tag",
        tag,
        "--push",
        "--attest",
        "--key",
        str(setup.keys.private),
    )
    assert built.code == 0, built.stderr
    pushed = re.search(r"pushed \S+ \((sha256:[0-9a-f]{64})\)", built.stderr)
    assert pushed, built.stderr
    shown = check(setup, f"docker://{tag}")
    assert shown.code == 0, shown.stderr
    assert shown.stdout.startswith(f"{setup.registry.host}/mlenv-test/built@{pushed.group(1)}: attestation ")
    index = fallback_index(setup, "built", pushed.group(1))
    assert len(index["manifests"]) == 3
    refused_early = run_cli(
        "build",
        str(setup.fraud.project),
        "--tag",
        tag,
        "--attest",
        "--key",
        str(setup.keys.private),
        env=env(),
    )
    assert refused_early.code == 2 and "needs --push" in refused_early.stderr


def test_a_fallback_tag_that_is_not_an_index_is_neither_replaced_nor_trusted(setup: Setup) -> None:
    # The image's own manifest put where the fallback index belongs: replacing it would drop what it holds.
    base = f"{setup.registry.url}/v2/mlenv-test/hostile/manifests"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json, " + OCI_MANIFEST}
    original = requests.get(f"{base}/{setup.digest}", headers=accept, timeout=30)
    assert original.status_code == 200
    tag = setup.digest.replace(":", "-")
    stored = requests.put(
        f"{base}/{tag}",
        data=original.content,
        headers={"Content-Type": original.headers["Content-Type"]},
        timeout=30,
    )
    assert stored.status_code == 201
    made = attest(setup, "hostile")
    assert made.code == 2 and made.stderr.count("\n") == 1, made.stderr
    assert f"mlenv-test/hostile:{tag}" in made.stderr and "will not replace it" in made.stderr
    after = requests.get(f"{base}/{tag}", headers=accept, timeout=30)
    assert after.content == original.content
    refused(check(setup, image(setup, "hostile")), "no mlenv verify attestation")
