"""The admission policies in examples/k8s, checked against the projects' published CRD schemas.

No cluster runs here, so neither Kyverno nor policy-controller evaluates them. What is checked instead:
each policy, as a template and as fill-in.sh fills it in, is valid against the openAPIV3Schema of the CRD
version it names (vendored under examples/k8s/schemas/, with source and licence), under the API server's
strict field validation (an unknown field is an error, as `kubectl apply` reports it); a mutated policy is
rejected; and the predicate type and fields the policies read are the ones mlenv writes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml  # PyYAML: the test extra installs it
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlenv.attest.statements import VERIFY_PREDICATE, verify_predicate
from mlenv.export import ExportContext
from mlenv.lockfile import lock_digest
from mlenv.model.report import Drift, Report

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "examples" / "k8s"
FILL_IN = K8S / "fill-in.sh"
KYVERNO = K8S / "kyverno-clusterpolicy.yaml"
POLICY_CONTROLLER = K8S / "policy-controller-clusterimagepolicy.yaml"
SCHEMAS = K8S / "schemas"
CRDS = {
    KYVERNO: SCHEMAS / "kyverno" / "clusterpolicies.kyverno.io-v1.json",
    POLICY_CONTROLLER: SCHEMAS
    / "policy-controller"
    / "clusterimagepolicies.policy.sigstore.dev-v1beta1.json",
}
PLACEHOLDERS = ("MLENV_TEAM_PUBLIC_KEY", "MLENV_LOCK_SHA256", "MLENV_IMAGE_GLOB")

# What mlenv's verify attestation carries: the predicate type is mlenv's own constant, and the two fields the
# policies read are checked against a predicate mlenv makes (test_the_fields_read_are_in_mlenvs_predicate).
VERIFY_PREDICATE_TYPE = VERIFY_PREDICATE
LOCK_SHA256_PATH = ("lock", "sha256")
VERDICT_PATH = ("verdict",)
VERDICT_MATCH = "match"

# The schema keywords these CRDs use and the converter below understands. A keyword outside this set (a
# newer CRD with x-kubernetes-int-or-string, nullable or CEL rules) fails the test instead of being
# silently ignored by jsonschema, which would weaken the check.
KNOWN_KEYWORDS = {
    "type", "properties", "items", "additionalProperties", "required", "enum", "default", "format", "pattern",
    "maxLength", "minLength", "minimum", "not", "oneOf",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type", "x-kubernetes-map-type",
}  # fmt: skip
# The API server's metadata.name rule for cluster-scoped objects: a DNS-1123 subdomain.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes structural schema as a JSON Schema with strict field validation.

    An object schema with `properties` and no `additionalProperties` refuses other fields, unless the CRD
    says `x-kubernetes-preserve-unknown-fields`. Kubernetes would prune such fields on create; `kubectl
    apply` (strict field validation, its default) refuses them, and a misspelt field is the mistake to catch.
    """
    unknown = set(schema) - KNOWN_KEYWORDS
    assert not unknown, f"schema keywords this test does not convert: {sorted(unknown)}"
    assert schema.get("x-kubernetes-list-type", "atomic") == "atomic", "set/map lists need uniqueness checks"
    converted = dict(schema)
    if "properties" in schema:
        converted["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            converted["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            converted[key] = strict(schema[key])
    if "oneOf" in schema:
        converted["oneOf"] = [strict(sub) for sub in schema["oneOf"]]
    return converted


def load_crd(policy: Path) -> dict[str, Any]:
    crd = json.loads(CRDS[policy].read_text())
    assert isinstance(crd, dict)
    return crd


def crd_errors(policy: Path, document: dict[str, Any]) -> list[str]:
    """Why the API server would refuse `document` under the CRD vendored for `policy` (empty: it accepts)."""
    crd = load_crd(policy)
    (version,) = crd["spec"]["versions"]
    found: list[str] = []
    expected_api = f"{crd['spec']['group']}/{version['name']}"
    if document.get("apiVersion") != expected_api:
        found.append(f"apiVersion {document.get('apiVersion')!r} is not {expected_api!r}")
    if document.get("kind") != crd["spec"]["names"]["kind"]:
        found.append(f"kind {document.get('kind')!r} is not {crd['spec']['names']['kind']!r}")
    name = document.get("metadata", {}).get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        found.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    root = version["schema"]["openAPIV3Schema"]
    # Every object has these at its root, whether its CRD's schema names them (Kyverno's) or not (sigstore's).
    implicit = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    schema = strict({**root, "properties": {**implicit, **root["properties"]}})
    # OpenAPI 3.0 schemas are draft-4 style (e.g. boolean exclusiveMinimum).
    validator = jsonschema.Draft4Validator(schema)
    found += [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]
    return found


def policy_controller_webhook_errors(document: dict[str, Any]) -> list[str]:
    """What policy-controller's own admission webhook refuses and its CRD schema (no `required`) lets through.

    Facts from its Go validation (pkg/apis/policy/v1beta1/clusterimagepolicy_validation.go at v0.15.1):
    an attestation needs a name and a predicateType (a full URI; short names are deprecated); a policy's type
    is cue or rego, with its data; a key has exactly one of data, secretRef, kms.
    """
    found: list[str] = []
    spec = document.get("spec", {})
    if not spec.get("images"):
        found.append("spec.images is empty")
    for a, authority in enumerate(spec.get("authorities", [])):
        key = authority.get("key", {})
        if sum(1 for source in ("data", "secretRef", "kms") if key.get(source)) != 1:
            found.append(f"authorities[{a}].key needs exactly one of data, secretRef, kms")
        for t, attestation in enumerate(authority.get("attestations", [])):
            where = f"authorities[{a}].attestations[{t}]"
            if not attestation.get("name"):
                found.append(f"{where}.name is missing")
            uri = urlsplit(attestation.get("predicateType", ""))
            if not (uri.scheme and uri.netloc):
                found.append(f"{where}.predicateType is not a full URI")
            policy = attestation.get("policy", {})
            if policy.get("type") not in ("cue", "rego") or not policy.get("data"):
                found.append(f"{where}.policy needs type cue or rego and its data")
    return found


def all_errors(policy: Path, document: dict[str, Any]) -> list[str]:
    """The API server checks the schema first and calls validating webhooks only for a valid object."""
    found = crd_errors(policy, document)
    if not found and policy == POLICY_CONTROLLER:
        found = policy_controller_webhook_errors(document)
    return found


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def kyverno_attestation(document: dict[str, Any]) -> dict[str, Any]:
    (rule,) = document["spec"]["rules"]
    (verify,) = rule["verifyImages"]
    (attestation,) = verify["attestations"]
    assert isinstance(attestation, dict)
    return attestation


def pc_attestation(document: dict[str, Any]) -> dict[str, Any]:
    (authority,) = document["spec"]["authorities"]
    (attestation,) = authority["attestations"]
    assert isinstance(attestation, dict)
    return attestation


def team_key(tmp_path: Path) -> tuple[Path, ec.EllipticCurvePublicKey]:
    """A fresh ECDSA P-256 key pair; the public half as PEM (SubjectPublicKeyInfo, as cosign writes it)."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    path = tmp_path / "team.pub"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM, spki))
    return path, public


def fill_in(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FILL_IN), *map(str, args)], capture_output=True, text=True, check=False)


GOLDEN_LOCK = ROOT / "tests" / "fixtures" / "golden" / "mlenv.lock"
LOCK_SHA256 = lock_digest(GOLDEN_LOCK.read_bytes()).removeprefix("sha256:")
GLOB = "localhost:5000/team/fraud-detector*"


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, ec.EllipticCurvePublicKey]:
    """Both policies filled in by fill-in.sh, as the README says, in tmp_path/out."""
    key, public = team_key(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = fill_in(key, LOCK_SHA256, GLOB, out)
    assert result.returncode == 0, result.stderr
    return out, public


@pytest.mark.parametrize("policy", [KYVERNO, POLICY_CONTROLLER], ids=["kyverno", "policy-controller"])
def test_the_template_as_written_is_valid(policy: Path) -> None:
    assert all_errors(policy, load(policy)) == []


@pytest.mark.parametrize("policy", [KYVERNO, POLICY_CONTROLLER], ids=["kyverno", "policy-controller"])
def test_each_placeholder_is_where_fill_in_looks_for_it(policy: Path) -> None:
    text = policy.read_text()
    # fill-in.sh replaces the key's placeholder only on a line of its own (a block scalar's one line).
    own_lines = re.findall(r"^ *MLENV_TEAM_PUBLIC_KEY$", text, re.MULTILINE)
    assert own_lines != [] and text.count("MLENV_TEAM_PUBLIC_KEY") == len(own_lines)
    body = yaml.safe_dump(load(policy))  # the YAML's values, without the comments
    for placeholder in PLACEHOLDERS:
        assert placeholder in body, placeholder


@pytest.mark.parametrize("policy", [KYVERNO, POLICY_CONTROLLER], ids=["kyverno", "policy-controller"])
def test_the_filled_in_policy_is_valid_and_holds_the_key_lock_and_glob(
    policy: Path, filled: tuple[Path, ec.EllipticCurvePublicKey]
) -> None:
    out, public = filled
    text = (out / policy.name).read_text()
    for placeholder in PLACEHOLDERS:
        assert placeholder not in text
    document = load(out / policy.name)
    assert all_errors(policy, document) == []
    if policy == KYVERNO:
        (rule,) = document["spec"]["rules"]
        (verify,) = rule["verifyImages"]
        assert verify["imageReferences"] == [GLOB]
        attestation = kyverno_attestation(document)
        ((entry,),) = [a["entries"] for a in attestation["attestors"]]
        pem = entry["keys"]["publicKeys"]
        assert [c["value"] for c in attestation["conditions"][0]["all"]] == [LOCK_SHA256, VERDICT_MATCH]
    else:
        assert document["spec"]["images"] == [{"glob": GLOB}]
        (authority,) = document["spec"]["authorities"]
        pem = authority["key"]["data"]
        assert f'input.predicate.lock.sha256 == "{LOCK_SHA256}"' in pc_attestation(document)["policy"]["data"]
    loaded = serialization.load_pem_public_key(pem.encode())
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    assert loaded.public_numbers() == public.public_numbers()


def test_the_lock_sha256_of_the_readme_is_mlenvs_lock_identity() -> None:
    """`sha256sum mlenv.lock`, as the README has it, is the digest mlenv labels images and attests with."""
    lock = ROOT / "tests" / "fixtures" / "golden" / "mlenv.lock"
    printed = subprocess.run(["sha256sum", str(lock)], capture_output=True, text=True, check=True).stdout
    assert "sha256:" + printed.split()[0] == lock_digest(lock.read_bytes())
    assert "sha256sum mlenv.lock | cut -d' ' -f1" in (K8S / "README.md").read_text()


Mutation = Callable[[dict[str, Any]], None]


def _set(path: tuple[str | int, ...], value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        node: Any = document
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return mutate


def _drop(path: tuple[str | int, ...]) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        node: Any = document
        for step in path[:-1]:
            node = node[step]
        del node[path[-1]]

    return mutate


RULE: tuple[str | int, ...] = ("spec", "rules", 0)
VERIFY = (*RULE, "verifyImages", 0)
K_ATT = (*VERIFY, "attestations", 0)
K_SET = (*K_ATT, "attestors", 0)
K_KEYS = (*K_SET, "entries", 0, "keys")
K_COND = (*K_ATT, "conditions", 0, "all", 0)
AUTH: tuple[str | int, ...] = ("spec", "authorities", 0)
P_ATT = (*AUTH, "attestations", 0)

MUTATIONS: list[tuple[Path, str, Mutation, str]] = [
    (KYVERNO, "rule without its name (required)", _drop((*RULE, "name")), "spec.rules.0"),
    (KYVERNO, "rule without match (required)", _drop((*RULE, "match")), "spec.rules.0"),
    (KYVERNO, "attestor count as a word", _set((*K_SET, "count"), "one"), "attestors.0.count"),
    (KYVERNO, "attestor count zero", _set((*K_SET, "count"), 0), "attestors.0.count"),
    (KYVERNO, "misspelt publicKeys", _set(K_KEYS, {"publicKey": "x"}), "keys"),
    (KYVERNO, "ignoreTlog as a string", _set((*K_KEYS, "rekor", "ignoreTlog"), "yes"), "rekor.ignoreTlog"),
    (KYVERNO, "unknown condition operator", _set((*K_COND, "operator"), "Is"), "all.0.operator"),
    (KYVERNO, "failureAction lower case", _set((*VERIFY, "failureAction"), "enforce"), "failureAction"),
    (KYVERNO, "imageReferences as one string", _set((*VERIFY, "imageReferences"), "x/*"), "imageReferences"),
    (KYVERNO, "verifyImages type unknown", _set((*VERIFY, "type"), "cosign"), "verifyImages.0.type"),
    (KYVERNO, "wrong kind", _set(("kind",), "Policy"), "kind"),
    (KYVERNO, "name with capitals", _set(("metadata", "name"), "Mlenv"), "metadata.name"),
    (POLICY_CONTROLLER, "key data as a list", _set((*AUTH, "key", "data"), ["-----BEGIN"]), "key.data"),
    (POLICY_CONTROLLER, "misspelt predicatetype", _set((*P_ATT, "predicatetype"), "x"), "attestations.0"),
    (POLICY_CONTROLLER, "image glob as a number", _set(("spec", "images", 0, "glob"), 5), "glob"),
    (POLICY_CONTROLLER, "authorities as a map", _set(("spec", "authorities"), {"a": 1}), "spec.authorities"),
    (POLICY_CONTROLLER, "no predicateType", _drop((*P_ATT, "predicateType")), "predicateType"),
    (POLICY_CONTROLLER, "short predicateType", _set((*P_ATT, "predicateType"), "custom"), "predicateType"),
    (POLICY_CONTROLLER, "policy type wasm", _set((*P_ATT, "policy", "type"), "wasm"), "policy"),
    (POLICY_CONTROLLER, "key from two sources", _set((*AUTH, "key", "kms"), "awskms:///k"), "key"),
    (POLICY_CONTROLLER, "wrong apiVersion", _set(("apiVersion",), "policy.sigstore.dev/v1"), "apiVersion"),
]


@pytest.mark.parametrize(
    ("policy", "mutate", "where"),
    [(p, m, w) for p, _, m, w in MUTATIONS],
    ids=[why for _, why, _, _ in MUTATIONS],
)
def test_a_mutated_policy_is_refused_where_it_was_changed(policy: Path, mutate: Mutation, where: str) -> None:
    document = copy.deepcopy(load(policy))
    assert all_errors(policy, document) == []
    mutate(document)
    errors = all_errors(policy, document)
    assert errors != []
    assert any(where in error for error in errors), errors


def test_the_converter_does_not_pass_what_the_plain_schema_would_prune() -> None:
    """Without strict field validation a misspelt field is pruned, not refused: the converter refuses it."""
    document = load(KYVERNO)
    _set((*K_KEYS, "publicKey"), "x")(document)
    (version,) = load_crd(KYVERNO)["spec"]["versions"]
    assert list(jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"]).iter_errors(document)) == []
    assert any("publicKey" in error for error in crd_errors(KYVERNO, document))


def test_both_policies_ask_for_mlenvs_predicate_type() -> None:
    assert kyverno_attestation(load(KYVERNO))["type"] == VERIFY_PREDICATE_TYPE
    attestation = pc_attestation(load(POLICY_CONTROLLER))
    assert attestation["predicateType"] == VERIFY_PREDICATE_TYPE
    assert f'input.predicateType == "{VERIFY_PREDICATE_TYPE}"' in attestation["policy"]["data"]


def test_kyvernos_conditions_read_the_lock_sha256_and_the_verdict() -> None:
    """Kyverno puts the statement's predicate at the top of the conditions' context: `{{ lock.sha256 }}`."""
    (conditions,) = kyverno_attestation(load(KYVERNO))["conditions"]
    assert list(conditions) == ["all"]
    read = []
    for condition in conditions["all"]:
        variable = re.fullmatch(r"\{\{ ([a-z0-9_.]+) \}\}", condition["key"])
        assert variable is not None, condition["key"]
        read.append((tuple(variable.group(1).split(".")), condition["operator"], condition["value"]))
    assert read == [
        (LOCK_SHA256_PATH, "Equals", "MLENV_LOCK_SHA256"),
        (VERDICT_PATH, "Equals", VERDICT_MATCH),
    ]


def test_the_rego_policy_requires_the_lock_sha256_and_the_verdict() -> None:
    """policy-controller evaluates `data.sigstore.isCompliant` (Rego v0) with the statement as input."""
    rego = pc_attestation(load(POLICY_CONTROLLER))["policy"]["data"]
    assert rego.splitlines()[0] == "package sigstore"
    assert "default isCompliant = false" in rego
    (body,) = re.findall(r"isCompliant \{\n(.*?)\n\}", rego, re.DOTALL)
    rules = [line.strip() for line in body.splitlines()]
    assert rules == [
        f'input.predicateType == "{VERIFY_PREDICATE_TYPE}"',
        f'input.predicate.{".".join(LOCK_SHA256_PATH)} == "MLENV_LOCK_SHA256"',
        f'input.predicate.{".".join(VERDICT_PATH)} == "{VERDICT_MATCH}"',
    ]


def test_the_fields_read_are_in_mlenvs_predicate() -> None:
    """The paths the policies read hold the lock's sha256 and `match` in a predicate mlenv makes, and never
    `match` for a drifted image."""
    context = ExportContext(lock_digest="sha256:" + "ab" * 32, platform="linux/amd64", mlenv_version="0")

    def read(predicate: dict[str, Any], path: tuple[str, ...]) -> Any:
        for key in path:
            predicate = predicate[key]
        return predicate

    good = verify_predicate(Report(subject="x", layers=("config",)), context)
    assert read(good, LOCK_SHA256_PATH) == "ab" * 32 and read(good, VERDICT_PATH) == VERDICT_MATCH
    drift = Drift(layer="config", kind="changed", subject="User", expected="10001", actual="0")
    bad = verify_predicate(Report(subject="x", layers=("config",), drifts=(drift,)), context)
    assert read(bad, VERDICT_PATH) != VERDICT_MATCH


def test_kyverno_does_not_ask_a_transparency_log_mlenv_never_wrote_to() -> None:
    (entry,) = kyverno_attestation(load(KYVERNO))["attestors"][0]["entries"]
    assert entry["keys"]["rekor"] == {"ignoreTlog": True}
    assert entry["keys"]["ctlog"] == {"ignoreSCT": True}
    (authority,) = load(POLICY_CONTROLLER)["spec"]["authorities"]
    assert "ctlog" not in authority  # policy-controller skips the log when no ctlog is named


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("missing.pub", LOCK_SHA256, GLOB), "cannot read the public key file missing.pub"),
        (("{key}", LOCK_SHA256.upper(), GLOB), "LOCK_SHA256 must be 64 lowercase hex digits"),
        (("{key}", "sha256:" + LOCK_SHA256, GLOB), "LOCK_SHA256 must be 64 lowercase hex digits"),
        (("{key}", LOCK_SHA256, 'x" && y'), "IMAGE_GLOB must be non-empty"),
        (("{key}", LOCK_SHA256, ""), "IMAGE_GLOB must be non-empty"),
        (("{key}",), "usage: fill-in.sh"),
    ],
    ids=["no-key-file", "upper-hex", "prefixed", "quote-in-glob", "empty-glob", "too-few"],
)
def test_fill_in_refuses_bad_input_in_one_line_and_writes_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    key, _ = team_key(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [str(FILL_IN), *(a.replace("{key}", str(key)) for a in args), str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert list(out.iterdir()) == []


def test_fill_in_refuses_a_private_key_without_printing_it(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # A file with both halves, as a careless copy might make: still refused.
    both = pem + private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = tmp_path / "team.key"
    key.write_bytes(both)
    out = tmp_path / "out"
    out.mkdir()
    result = fill_in(key, LOCK_SHA256, GLOB, out)
    assert result.returncode == 2
    assert result.stderr == f"fill-in.sh: {key} holds a private key; give the public key\n"
    body = b"".join(pem.splitlines()[1:-1]).decode()
    assert body[:40] not in result.stdout + result.stderr
    assert list(out.iterdir()) == []


def test_the_vendored_schemas_name_their_source_and_licence() -> None:
    sources = (SCHEMAS / "README.md").read_text()
    for crd in CRDS.values():
        assert crd.name in sources
        licence = (crd.parent / "LICENSE").read_text()
        assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    # The README records each vendored file's sha256: a hand edit of a schema shows up here.
    for path in sorted(SCHEMAS.glob("*/*")):
        assert hashlib.sha256(path.read_bytes()).hexdigest() in sources, path
