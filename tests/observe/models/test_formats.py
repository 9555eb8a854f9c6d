"""The non-pickle formats, each written by its real library (torch's archive excepted: see below)."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest

from mlenv.model.modelfacts import ModelFacts, Producer
from mlenv.observe.models import read_model
from tests.observe.models.conftest import Made


def read(path: Path) -> ModelFacts:
    with path.open("rb") as handle:
        return read_model(handle, name=str(path))


@pytest.mark.network
@pytest.mark.parametrize("ubj", [False, True])
def test_xgboost_records_its_version(made: Made, ubj: bool) -> None:
    facts = read(made.get("xgboost", ubj=ubj))
    assert facts.format == ("xgboost-ubj" if ubj else "xgboost-json")
    assert facts.producers == (Producer(library="xgboost", version="3.2.0"),)
    assert facts.imports == facts.unsafe == ()


@pytest.mark.network
def test_xgboost_json_is_read_from_a_stream_that_arrives_in_small_pieces(made: Made) -> None:
    # Chunk boundaries fall inside strings, escapes and numbers: the scan must not lose its place.
    data = made.get("xgboost").read_bytes()

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.position = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            piece = data[self.position : self.position + 7]
            self.position += len(piece)
            return piece

    facts = read_model(Trickle(), name="model.json")  # type: ignore[arg-type]
    assert facts.producers == (Producer(library="xgboost", version="3.2.0"),)


@pytest.mark.network
def test_onnx_records_ir_version_opsets_and_converter(made: Made) -> None:
    facts = read(made.get("onnx"))
    assert facts.format == "onnx"
    assert facts.producers == ()
    assert facts.details == (
        ("ir_version", "8"),
        ("opset:ai.onnx", "17"),
        ("opset:ai.onnx.ml", "3"),
        ("producer_name", "mlenv-tests"),
        ("producer_version", "0.1"),
    )
    assert facts.note is not None and "not a runtime version" in facts.note


@pytest.mark.network
def test_lightgbm_text_records_its_format_but_no_library_version(made: Made) -> None:
    facts = read(made.get("lightgbm"))
    assert facts.format == "lightgbm-text"
    assert facts.producers == (Producer(library="lightgbm", version=None),)
    assert ("model_format", "v4") in facts.details
    assert facts.note == "a LightGBM text model records its format version, not lightgbm's"


@pytest.mark.network
def test_safetensors_records_no_producer(made: Made) -> None:
    facts = read(made.get("safetensors"))
    assert facts.format == "safetensors"
    assert facts.producers == ()
    assert facts.details == (("dtypes", "F32"), ("metadata:format", "np"), ("tensors", "2"))
    assert facts.note is not None and "no producer version" in facts.note


@pytest.mark.network
def test_skops_records_skops_and_scikit_learn(made: Made) -> None:
    facts = read(made.get("skops"))
    assert facts.format == "skops"
    assert facts.producers == (
        Producer(library="scikit-learn", version="1.5.2"),
        Producer(library="skops", version="0.16.0"),
    )
    assert "sklearn.linear_model._logistic.LogisticRegression" in facts.imports
    assert facts.unsafe == ()


@pytest.mark.network
def test_a_zip_read_from_a_stream_that_cannot_seek(made: Made) -> None:
    data = made.get("skops").read_bytes()

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            chunk = self.inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    facts = read_model(io.BufferedReader(Pipe()), name="model.skops")
    assert Producer(library="skops", version="0.16.0") in facts.producers


# -- torch's zip archive: torch's wheel is ~800 MB, too big for this machine's tests, so the archive
# is assembled here in torch.save's layout (archive/data.pkl, version, byteorder, data/<key>) with the
# pickle opcodes torch writes for a state dict (a tensor rebuilt from a persistent-id storage).


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _torch_state_dict_pickle(extra: bytes = b"") -> bytes:
    ordered_dict = b"ccollections\nOrderedDict\n)R"
    storage = b"(" + _unicode("storage") + b"ctorch\nFloatStorage\n" + _unicode("0") + _unicode("cpu")
    storage += b"K\x04tQ"  # BININT1 4, TUPLE, BINPERSID
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K\x00K\x02K\x02\x86K\x02K\x01\x86\x89"
    tensor += ordered_dict + b"tR"
    return b"\x80\x02" + ordered_dict + b"(" + _unicode("weight") + tensor + extra + b"u."


def _torch_archive(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", data_pkl)
        archive.writestr("model/byteorder", "little")
        archive.writestr("model/data/0", b"\x00" * 16)
        archive.writestr("model/version", "3\n")
        archive.writestr("model/.data/serialization_id", "1234")
    return path


def test_a_torch_archive(tmp_path: Path) -> None:
    facts = read(_torch_archive(tmp_path / "model.pt", _torch_state_dict_pickle()))
    assert facts.format == "torch-zip"
    assert facts.producers == (Producer(library="torch", version=None),)
    assert ("archive_version", "3") in facts.details and ("byteorder", "little") in facts.details
    assert ("storages", "1") in facts.details
    rebuild = "torch._utils._rebuild_tensor_v2"
    assert facts.imports == ("collections.OrderedDict", "torch.FloatStorage", rebuild)
    assert facts.unsafe == ()
    assert facts.note == "a torch archive records its serialization format version, not torch's"


def test_a_torch_archive_whose_pickle_runs_a_command(tmp_path: Path) -> None:
    evil = _unicode("hook") + b"cos\nsystem\n" + _unicode(f"touch {tmp_path / 'canary'}") + b"\x85R"
    facts = read(_torch_archive(tmp_path / "model.pt", _torch_state_dict_pickle(evil)))
    assert facts.unsafe == ("os.system",)
    assert not (tmp_path / "canary").exists()


def test_unknown_files_say_so(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 4)
    facts = read(path)
    assert facts.format == "unknown" and facts.producers == ()
    assert facts.note is not None and "not a format mlenv reads" in facts.note
    other_zip = tmp_path / "bundle.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("README", "hello")
    assert read(other_zip).format == "unknown"


@pytest.mark.parametrize(
    ("data", "note"),
    [
        (b'{"model": {"vocab": {"a": 1}}, "version": "1.0"}', "a JSON document that is not an XGBoost model"),
        (b"{U\x05vocab{U\x01aU\x01}}", "a UBJSON document that is not an XGBoost model"),
        (__import__("gzip").compress(b"id,amount\n1,2\n"), "a gzip-compressed file that holds no pickle"),
        (b"\x89HDF\r\n\x1a\n" + b"\x00" * 64, "not a format mlenv reads"),
        (b"\x08\x01\x00\x00", "not a format mlenv reads"),
    ],
)
def test_well_formed_files_of_no_model_format_are_unknown(data: bytes, note: str) -> None:
    facts = read_model(io.BytesIO(data), name="models/other.bin")
    assert facts.format == "unknown" and facts.producers == ()
    assert facts.note is not None and facts.note.startswith(note)
