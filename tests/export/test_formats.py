"""Each exporter on the golden lock and a drifted image's report, checked by the format's own reader:
cyclonedx-python-lib's strict validator, the official SPDX 2.3 schema, packaging.pylock, and the
published audit schema. Plus what all formats share: same inputs, same bytes; no credential."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta, timezone

import jsonschema
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packaging.pylock import Pylock

from mlenv.export import FORMATS, UnknownFormatError, export
from mlenv.export.context import EPOCH, document_time
from mlenv.export.inventory import inventory
from mlenv.export.redaction import redact_text
from mlenv.model.lock import AptSource, LockedModel, PythonFile
from mlenv.model.time import rfc3339, rfc3339_at
from mlenv.verify.formats import as_data
from tests.export.data import IMAGE, LOCK_DIGEST, drifted_report, image_context, lock_context
from tests.export.validators import audit_validator, validate_spdx
from tests.lockdata import full_lock

SPDX_ID = re.compile(r"^SPDXRef-[A-Za-z0-9.-]+$")


def both_ways() -> list[tuple[str, object]]:
    """(label, (report, context)) for the lock alone and for a drifted image."""
    lock = full_lock()
    return [("lock", (None, lock_context(lock))), ("image", (drifted_report(lock), image_context(lock)))]


# ---------------------------------------------------------------------------- CycloneDX


@pytest.mark.parametrize(("report", "context"), [case for _, case in both_ways()], ids=["lock", "image"])
def test_cyclonedx_passes_the_strict_1_5_validator(report, context) -> None:  # type: ignore[no-untyped-def]
    text = export("cyclonedx", full_lock(), report, context).decode()
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text) is None
    bom = json.loads(text)
    assert bom["specVersion"] == "1.5" and bom["bomFormat"] == "CycloneDX"
    root = bom["metadata"]["component"]
    assert root["type"] == "container"
    purls = {c["purl"] for c in bom["components"] if "purl" in c}
    assert "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u6?arch=amd64&distro=debian-12" in purls
    assert "pkg:pypi/pandas@2.0.3" in purls
    assert "pkg:generic/nvidia/cudnn@8.9.2.26" in purls
    base = next(c for c in bom["components"] if c["type"] == "container")
    assert base["purl"] == (
        "pkg:oci/bookworm-python@sha256:"
        + "3" * 64
        + "?arch=amd64&repository_url=127.0.0.1:5000/mlenv-test/bookworm-python"
    )
    assert {c["name"] for c in base["components"]} == {"libc6", "base-files"}
    pandas = next(c for c in bom["components"] if c.get("purl") == "pkg:pypi/pandas@2.0.3")
    # The wheel that installs on linux/amd64, not the arm64 one.
    assert pandas["hashes"] == [
        {"alg": "SHA-256", "content": "d9cd88488cceb7635aebb84809d087468eb33551097d600c6dad13602029c2df"}
    ]
    model = next(c for c in bom["components"] if c["type"] == "machine-learning-model")
    assert model["hashes"][0]["content"] == "f" * 64
    root_deps = next(d for d in bom["dependencies"] if d["ref"] == root["bom-ref"])
    assert len(root_deps["dependsOn"]) == len(bom["components"])
    props = {p["name"]: p["value"] for p in bom["metadata"]["properties"]}
    assert props["mlenv:verify:verdict"] == ("not-verified" if report is None else "drift")
    assert bom["metadata"]["timestamp"].startswith("2024-07-01T00:00:00")


def test_cyclonedx_root_is_the_image_by_its_digest() -> None:
    bom = json.loads(export("cyclonedx", full_lock(), drifted_report(full_lock()), image_context()))
    root = bom["metadata"]["component"]
    assert root["name"] == IMAGE.reference and root["version"] == IMAGE.config_digest
    assert root["hashes"] == [{"alg": "SHA-256", "content": "c0" * 32}]
    assert {p["name"]: p["value"] for p in bom["metadata"]["properties"]}["mlenv:verify:drifts"] == "4"


def test_cyclonedx_serial_number_depends_on_the_inputs_only() -> None:
    one = json.loads(export("cyclonedx", full_lock(), None, lock_context()))["serialNumber"]
    other = json.loads(
        export(
            "cyclonedx",
            full_lock(),
            None,
            dataclasses.replace(lock_context(), lock_digest="sha256:" + "77" * 32),
        )
    )["serialNumber"]
    assert one.startswith("urn:uuid:") and one != other


# ---------------------------------------------------------------------------- SPDX


@pytest.mark.parametrize(("report", "context"), [case for _, case in both_ways()], ids=["lock", "image"])
def test_spdx_passes_the_official_2_3_schema(report, context) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(export("spdx", full_lock(), report, context))
    validate_spdx(document)
    ids = [p["SPDXID"] for p in document["packages"]]
    assert len(ids) == len(set(ids)) and all(SPDX_ID.match(i) for i in ids)
    known = {*ids, "SPDXRef-DOCUMENT"}
    for relation in document["relationships"]:  # every relationship joins two elements that exist
        assert relation["spdxElementId"] in known and relation["relatedSpdxElement"] in known
    root = next(p for p in document["packages"] if p["SPDXID"] == "SPDXRef-image")
    assert root["primaryPackagePurpose"] == "CONTAINER"
    assert {
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-image",
    } in document["relationships"]
    contained = {
        r["relatedSpdxElement"]
        for r in document["relationships"]
        if r["spdxElementId"] == "SPDXRef-image" and r["relationshipType"] == "CONTAINS"
    }
    # base image, 2 apt pins, 2 python pins, 2 CUDA components, 1 model
    assert len(contained) == 8
    curl = next(p for p in document["packages"] if p["name"] == "curl")
    assert curl["externalRefs"] == [
        {
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u6?arch=amd64&distro=debian-12",
        }
    ]
    assert curl["checksums"] == [{"algorithm": "SHA256", "checksumValue": "c" * 64}]
    assert (
        curl["downloadLocation"]
        == "http://deb.debian.org/debian/pool/main/c/curl/curl_7.88.1-10+deb12u6_amd64.deb"
    )
    assert document["creationInfo"]["created"] == "2024-07-01T00:00:00Z"
    if report is not None:
        assert "drift, 4 drift(s)" in root["annotations"][0]["comment"]


def test_spdx_namespace_is_deterministic_and_names_the_inputs() -> None:
    first = json.loads(export("spdx", full_lock(), None, lock_context()))["documentNamespace"]
    again = json.loads(export("spdx", full_lock(), None, lock_context()))["documentNamespace"]
    with_image = json.loads(export("spdx", full_lock(), drifted_report(full_lock()), image_context()))[
        "documentNamespace"
    ]
    assert first == again != with_image and first.startswith("https://")


# ---------------------------------------------------------------------------- pylock


def test_pylock_is_read_by_packaging_and_holds_the_locked_set() -> None:
    lock = full_lock()
    text = export("pylock", lock, None, lock_context()).decode()
    pylock = Pylock.from_dict(tomllib.loads(text))
    assert {f"{p.name}=={p.version}" for p in pylock.packages} == {
        f"{p.name}=={p.version}" for p in lock.python.packages
    }
    pandas = next(p for p in pylock.packages if p.name == "pandas")
    assert {w.hashes["sha256"] for w in pandas.wheels or ()} == {
        w.sha256 for w in lock.python.packages[0].wheels
    }
    cudnn = next(p for p in pylock.packages if p.name == "nvidia-cudnn-cu12")
    assert cudnn.sdist is not None and cudnn.sdist.hashes["sha256"] == "e" * 64
    assert str(pylock.requires_python) == "==3.11.*"


# ---------------------------------------------------------------------------- in-toto / SLSA


def test_intoto_statement_subject_dependencies_and_verdict() -> None:
    lock = full_lock()
    report = drifted_report(lock)
    statement = json.loads(export("intoto", lock, report, image_context(lock)))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [{"name": IMAGE.reference, "digest": {"sha256": "c0" * 32}}]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["lock"]["digest"] == {
        "sha256": LOCK_DIGEST.removeprefix("sha256:")
    }
    dependencies = definition["resolvedDependencies"]
    digests = {d["digest"]["sha256"] for d in dependencies}
    wheels = {w.sha256 for p in lock.python.packages for w in p.wheels}
    assert wheels | {"b" * 64, "c" * 64, "e" * 64, "f" * 64, "2" * 64} == digests  # +debs, sdist, model, base
    assert dependencies[0]["uri"].startswith("oci://127.0.0.1:5000/mlenv-test/bookworm-python@sha256:2222")
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests)
    byproduct = statement["predicate"]["runDetails"]["byproducts"][0]
    assert byproduct["annotations"]["verdict"] == "drift"
    assert json.loads(base64.b64decode(byproduct["content"])) == as_data(report)
    assert statement["predicate"]["runDetails"]["metadata"] == {"startedOn": "2024-07-01T00:00:00Z"}


def test_intoto_of_the_lock_alone_names_the_lock_and_no_time() -> None:
    lock = dataclasses.replace(full_lock(), as_of=None)
    statement = json.loads(
        export("intoto", lock, None, dataclasses.replace(lock_context(lock), created=None))
    )
    assert statement["subject"] == [{"name": "mlenv.lock", "digest": {"sha256": "5e" * 32}}]
    assert "metadata" not in statement["predicate"]["runDetails"]  # optional: never the wall clock
    assert statement["predicate"]["runDetails"]["byproducts"][0]["annotations"] == {"verdict": "not-verified"}


# ---------------------------------------------------------------------------- JSON audit bundle


@pytest.mark.parametrize(("report", "context"), [case for _, case in both_ways()], ids=["lock", "image"])
def test_json_bundle_follows_its_schema(report, context) -> None:  # type: ignore[no-untyped-def]
    bundle = json.loads(export("json", full_lock(), report, context))
    audit_validator().validate(bundle)
    assert bundle["lock"]["sha256"] == LOCK_DIGEST and bundle["lock"]["content"]["name"] == "golden"
    assert bundle["verdict"] == ("not-verified" if report is None else "drift")
    if report is not None:
        assert bundle["report"] == as_data(report)
        assert bundle["facts"]["artifacts"] == [
            {"path": "/app/models/model.joblib", "sha256": "0" * 64, "model": None, "accept_producer": []}
        ]


def test_json_schema_rejects_a_bundle_with_a_wrong_verdict() -> None:
    bundle = json.loads(export("json", full_lock(), None, lock_context()))
    bundle["verdict"] = "fine"
    with pytest.raises(jsonschema.ValidationError):
        audit_validator().validate(bundle)


# ---------------------------------------------------------------------------- HTML


def test_html_is_self_contained_and_escapes_everything() -> None:
    lock = dataclasses.replace(full_lock(), name='<script>alert("x")</script>')
    page = export("html", lock, drifted_report(lock), image_context(lock)).decode()
    assert "<script" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    for external in ("src=", "href=", "url(", "<link", "@import"):
        assert external not in page
    assert (
        page.index('id="verdict"')
        < page.index('id="layer-base"')
        < page.index('id="layer-apt"')
        < page.index('id="layer-python"')
        < page.index('id="layer-cuda"')
        < page.index('id="layer-models"')
    )


def test_html_marks_drift_rows() -> None:
    page = export("html", full_lock(), drifted_report(full_lock()), image_context()).decode()
    drift_rows = re.findall(r'<tr class="drift"[^>]*>(.*?)</tr>', page)
    assert any("bash-completion:all" in row for row in drift_rows)
    assert any("pandas" in row and "found 1.5.3" in row for row in drift_rows)
    assert any("/app/models/model.joblib" in row for row in drift_rows)
    assert not any(">curl<" in row for row in drift_rows)  # curl matched: not highlighted
    assert '<p class="headline">DRIFT</p>' in page


# ---------------------------------------------------------------------------- every format


@pytest.mark.parametrize("name", FORMATS)
def test_same_inputs_give_the_same_bytes(name: str) -> None:
    for report, context in (case for _, case in both_ways()):
        assert export(name, full_lock(), report, context) == export(name, full_lock(), report, context)


SECRET, USER = "hunter2-s3cret", "alice"


def credentialed_lock():  # type: ignore[no-untyped-def]
    lock = full_lock()
    index = f"https://{USER}:{SECRET}@pypi.corp.example/simple"
    pins = tuple(
        dataclasses.replace(
            pin,
            index=index,
            wheels=tuple(
                dataclasses.replace(w, url=w.url.replace("https://", f"https://{USER}:{SECRET}@"))
                for w in pin.wheels
            ),
        )
        for pin in lock.python.packages
    )
    return dataclasses.replace(
        lock,
        python=dataclasses.replace(lock.python, index_url=index, extra_index_urls=(index,), packages=pins),
        apt=dataclasses.replace(
            lock.apt,
            sources=(
                AptSource(
                    mirror=f"http://{USER}:{SECRET}@deb.corp.example/debian",
                    suite="bookworm",
                    components=("main",),
                ),
            ),
        ),
        cuda=dataclasses.replace(lock.cuda, torch_index=f"https://{USER}:{SECRET}@torch.corp.example/cu121"),
        models=(
            LockedModel(
                source=f"https://{USER}:{SECRET}@models.corp.example/m.joblib",
                target="/app/models/model.joblib",
                strategy="bake",
                sha256="f" * 64,
            ),
        ),
        app=dataclasses.replace(lock.app, env=(("PIP_INDEX_URL", index),)),
    )


@pytest.mark.parametrize("name", FORMATS)
def test_no_credential_reaches_any_export(name: str) -> None:
    lock = credentialed_lock()
    context = image_context(lock)
    context = dataclasses.replace(
        context,
        facts=dataclasses.replace(
            context.facts, env=(("PIP_INDEX_URL", f"https://{USER}:{SECRET}@pypi.corp.example/simple"),)
        ),
    )
    for report in (None, drifted_report(lock)):
        out = export(name, lock, report, context)
        token = base64.b64encode(f"{USER}:{SECRET}".encode())
        assert SECRET.encode() not in out and token not in out and f"{USER}%3A".encode() not in out
    # The URLs themselves survive, without their user-info (pylock and requirements have no models; they
    # name the index).
    survivor = (
        b"https://pypi.corp.example/simple"
        if name in ("pylock", "requirements")
        else b"https://models.corp.example/m.joblib"
    )
    assert survivor in export(name, lock, None, context)


def test_redact_text_keeps_text_and_drops_user_info() -> None:
    assert (
        redact_text("pip from https://u:p@host:8443/simple and http://x@y/z")
        == "pip from https://host:8443/simple and http://y/z"
    )
    assert redact_text("no url here: pkg:pypi/a@1") == "no url here: pkg:pypi/a@1"
    assert redact_text("https://u:p@[::1/broken") == "https://[::1/broken"


def test_unknown_format_names_the_valid_ones() -> None:
    with pytest.raises(UnknownFormatError, match="cyclonedx, spdx, intoto, html, json, pylock"):
        export("sbom", full_lock(), None, lock_context())


# ---------------------------------------------------------------------------- times and inventory


def test_document_time_prefers_as_of_then_source_date_epoch_and_never_the_clock() -> None:
    as_of = datetime(2024, 7, 1, tzinfo=UTC)
    assert document_time(as_of, "1700000000") == as_of
    assert document_time(None, "1700000000") == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert document_time(None, None) is None
    with pytest.raises(Exception, match="SOURCE_DATE_EPOCH: 'soon'"):
        document_time(None, "soon")


def test_rfc3339_is_utc_whole_seconds_and_refuses_a_naive_time() -> None:
    later = datetime(2024, 7, 1, 2, 30, 5, 999999, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(later) == "2024-07-01T00:30:05Z"
    assert rfc3339_at(1700000000) == "2023-11-14T22:13:20Z"
    with pytest.raises(ValueError, match="without a timezone"):
        rfc3339(datetime(2024, 7, 1))


def test_cyclonedx_and_html_print_the_as_of_as_rfc3339() -> None:
    bom = json.loads(export("cyclonedx", full_lock(), None, lock_context()))
    assert {p["name"]: p["value"] for p in bom["metadata"]["properties"]}["mlenv:lock:as-of"] == (
        "2024-07-01T00:00:00Z"
    )
    page = export("html", full_lock(), None, lock_context()).decode()
    assert '<tr><th>lock as-of</th><td class="mono">2024-07-01T00:00:00Z</td></tr>' in page


def test_spdx_and_cyclonedx_use_the_epoch_when_no_time_is_given() -> None:
    context = dataclasses.replace(lock_context(), created=None)
    spdx = json.loads(export("spdx", full_lock(), None, context))
    bom = json.loads(export("cyclonedx", full_lock(), None, context))
    assert spdx["creationInfo"]["created"] == "1970-01-01T00:00:00Z"
    assert bom["metadata"]["timestamp"].startswith(EPOCH.strftime("%Y-%m-%dT%H:%M:%S"))


def test_inventory_replaces_base_packages_the_closure_upgrades() -> None:
    lock = full_lock()
    upgraded = dataclasses.replace(
        lock,
        apt=dataclasses.replace(
            lock.apt,
            packages=lock.apt.packages
            + (dataclasses.replace(lock.apt.packages[0], name="libc6", version="2.36-9+deb12u7"),),
        ),
    )
    items = inventory(upgraded, lock_context(upgraded))
    assert [p.name for p in items.base_packages] == ["base-files"]
    assert [(p.name, p.version) for p in items.apt if p.name == "libc6"] == [("libc6", "2.36-9+deb12u7")]


def test_inventory_takes_the_sdist_when_no_wheel_installs() -> None:
    lock = full_lock()
    arm_only = dataclasses.replace(
        lock.python.packages[1],
        wheels=(
            PythonFile(
                name="nvidia_cudnn_cu12-8.9.2.26-py3-none-manylinux2014_aarch64.whl",
                url="https://x/y.whl",
                size=1,
                sha256="1" * 64,
            ),
        ),
    )
    lock = dataclasses.replace(
        lock, python=dataclasses.replace(lock.python, packages=(lock.python.packages[0], arm_only))
    )
    item = next(i for i in inventory(lock, lock_context(lock)).python if i.name == "nvidia-cudnn-cu12")
    assert item.sha256 == "e" * 64 and item.download is not None and item.download.endswith(".tar.gz")
