"""A tiny registry on 127.0.0.1 that misbehaves on purpose, for the corpus's docker:// cases.

The first path component after `corpus/` names the behaviour: `docker://HOST/corpus/s404/x:1` answers
404. Requests that arrive under the host name `localhost` (the same server reached by another name)
play "another host": a redirect there must not carry the Authorization header; one that does is
recorded in `leaks`, which every corpus case asserts is empty.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

USER, PASSWORD = "corpus", "hunter2-corpus-secret"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        content = b'ID=debian\nVERSION_ID="12"\n'
        info = tarfile.TarInfo("etc/os-release")
        info.size, info.mtime = len(content), 0
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


LAYER = _layer()
LAYER_GZ = gzip.compress(LAYER, mtime=0)


def _config(**changes: object) -> bytes:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(LAYER)]},
    }
    config.update(changes)
    return json.dumps(config).encode()


CONFIG = _config()
CONFIGS = {
    "config-garbage": b"\x00\xffnot json",
    "config-list": b"[1, 2]",
    "config-rootfs-str": _config(rootfs="layers"),
    "config-diffids-bad": _config(rootfs={"type": "layers", "diff_ids": ["md5:x"]}),
    "config-arm": _config(architecture="arm64"),
    "config-huge": b'{"pad": "' + b"x" * (9 << 20) + b'"}',
    "config-deep": b"[" * 200_000,
}


def _manifest(config_bytes: bytes = CONFIG, **changes: object) -> bytes:
    """A manifest of the one layer and `config_bytes`; a change to None removes that key."""
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(LAYER_GZ)}],
    }
    manifest.update(changes)
    return json.dumps({key: value for key, value in manifest.items() if value is not None}).encode()


GOOD = _manifest()
ARM = _manifest(CONFIGS["config-arm"])
MANIFESTS: dict[str, bytes] = {
    "garbage": b"<html>502 Bad Gateway</html>",
    "empty-body": b"",
    "list": b"[]",
    "string": b'"manifest"',
    "deep": b"[" * 200_000,
    "huge": b'{"pad": "' + b" " * (5 << 20) + b'"}',
    "schema1": json.dumps({"schemaVersion": 1, "name": "x"}).encode(),
    "noconfig": _manifest(config=None),
    "config-string": _manifest(config="sha256:abc"),
    "config-baddigest": _manifest(config={"digest": "sha256:../../../etc/passwd", "size": 1}),
    "config-sha512": _manifest(config={"digest": "sha512:" + "a" * 128, "size": 1}),
    "layers-notlist": _manifest(layers={"digest": sha(LAYER_GZ)}),
    "layer-nodigest": _manifest(layers=[{"mediaType": "application/vnd.oci.image.layer.v1.tar"}]),
    "layer-badsize": _manifest(layers=[{"digest": sha(LAYER_GZ), "size": -1}]),
    "layer-sizestr": _manifest(layers=[{"digest": sha(LAYER_GZ), "size": "12"}]),
    "mediatype-int": json.dumps({"schemaVersion": 2, "mediaType": 5}).encode(),
    "index-noplatform": json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [
                {"digest": sha(ARM), "size": len(ARM), "platform": {"os": "linux", "architecture": "arm64"}}
            ],
        }
    ).encode(),
    "index-notlist": json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": {"a": 1}}).encode(),
    "index-items": json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": ["sha256:x"]}).encode(),
    "index-platform-str": json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [{"digest": sha(GOOD), "platform": "linux/amd64"}],
        }
    ).encode(),
}
for _name, _config_bytes in CONFIGS.items():
    MANIFESTS[_name] = _manifest(_config_bytes)
NESTED_INNER = json.dumps(
    {"schemaVersion": 2, "mediaType": INDEX, "manifests": [{"digest": sha(GOOD), "size": len(GOOD)}]}
).encode()
MANIFESTS["index-nested"] = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{"digest": sha(NESTED_INNER), "platform": {"os": "linux", "architecture": "amd64"}}],
    }
).encode()
BY_DIGEST = {sha(body): body for body in [GOOD, ARM, NESTED_INNER, *MANIFESTS.values()]}
BLOBS = {sha(CONFIG): CONFIG, sha(LAYER_GZ): LAYER_GZ, **{sha(body): body for body in CONFIGS.values()}}
STATUS = {
    "s404": 404,
    "s500": 500,
    "s503": 503,
    "s429": 429,
    "s403": 403,
    "s418": 418,
    "s302-nolocation": 302,
}


class CorpusRegistry:
    def __init__(self) -> None:
        self.leaks: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                try:
                    registry.answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_HEAD = do_GET

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                return None  # a client that hangs up on purpose (a timeout case) is not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CorpusRegistry:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

    def write_docker_config(self, directory: Path, credentials: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        token = base64.b64encode(credentials.encode()).decode()
        (directory / "config.json").write_text(json.dumps({"auths": {self.host: {"auth": token}}}))

    # ------------------------------------------------------------------ answers

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        host = request.headers.get("Host", "")
        path = request.path
        authorization = request.headers.get("Authorization")
        if host.startswith("localhost"):
            if authorization:
                self.leaks.append(f"{path}: {authorization.split(' ', 1)[0]}")
                return self.send(request, 500, b"credentials leaked")
            return self.send(request, 404, b"{}")
        if path.startswith("/token/"):
            return self.token(request, path.split("/")[2].split("?")[0])
        parts = path.split("/")
        if len(parts) < 6 or parts[1] != "v2" or parts[2] != "corpus":
            return self.send(request, 404, b"{}")
        behaviour, kind, reference = parts[3], parts[-2], parts[-1]
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if behaviour in STATUS:
            return self.send(request, STATUS[behaviour], b'{"errors": []}')
        if behaviour == "s401basic" or (
            behaviour in {"redirect-other", "basic-ok"} and authorization != basic
        ):
            return self.send(request, 401, b"{}", {"WWW-Authenticate": 'Basic realm="corpus"'})
        if behaviour.startswith("bearer-"):
            if authorization != "Bearer good-token":
                realm = {
                    "bearer-norealm": "Bearer service=corpus",
                    "bearer-insecure": 'Bearer realm="http://token.example/token",service="corpus"',
                }.get(behaviour, f'Bearer realm="http://{self.host}/token/{behaviour}",service="corpus"')
                return self.send(request, 401, b"{}", {"WWW-Authenticate": realm})
        if behaviour == "negotiate":
            return self.send(request, 401, b"{}", {"WWW-Authenticate": "Negotiate"})
        if behaviour == "slow":
            time.sleep(8)
            return self.send(request, 200, GOOD, {"Content-Type": MANIFEST})
        if behaviour == "reset":
            request.close_connection = True
            request.connection.shutdown(2)
            return None
        if behaviour == "redirect-other":
            return self.redirect(request, f"http://localhost:{self.port}{path}")
        if behaviour == "redirect-loop":
            return self.redirect(request, path)
        if behaviour == "redirect-file":
            return self.redirect(request, "file:///etc/passwd")
        if kind == "manifests":
            return self.manifest(request, behaviour, reference)
        return self.blob(request, behaviour, reference)

    def manifest(self, request: BaseHTTPRequestHandler, behaviour: str, reference: str) -> None:
        body = BY_DIGEST.get(reference) if reference.startswith("sha256:") else MANIFESTS.get(behaviour, GOOD)
        if body is None:
            return self.send(request, 404, b"{}")
        headers = {"Content-Type": MANIFEST, "Docker-Content-Digest": sha(body)}
        if behaviour == "digest-mismatch":
            headers["Docker-Content-Digest"] = sha(b"another manifest")
        return self.send(request, 200, body, headers)

    def blob(self, request: BaseHTTPRequestHandler, behaviour: str, digest: str) -> None:
        is_layer = digest == sha(LAYER_GZ)
        if behaviour == "config-404" and not is_layer:
            return self.send(request, 404, b"{}")
        if behaviour == "blob-500" and is_layer:
            return self.send(request, 500, b"{}")
        body = BLOBS.get(digest)
        if body is None:
            return self.send(request, 404, b"{}")
        if behaviour == "config-mismatch" and not is_layer:
            body = body + b" "
        if behaviour == "blob-mismatch" and is_layer:
            body = gzip.compress(LAYER + b"\0" * 1024, mtime=0)
        if behaviour == "blob-truncated" and is_layer:
            request.send_response(200)
            request.send_header("Content-Length", str(len(body) + 100))
            request.end_headers()
            request.wfile.write(body[: len(body) // 2])
            request.close_connection = True
            return None
        return self.send(request, 200, body)

    def token(self, request: BaseHTTPRequestHandler, behaviour: str) -> None:
        answers = {
            "bearer-ok": (200, b'{"token": "good-token"}'),
            "bearer-deny": (401, b"{}"),
            "bearer-garbage": (200, b"<html>"),
            "bearer-list": (200, b"[]"),
            "bearer-notoken": (200, b'{"expires_in": 60}'),
            "bearer-badtoken": (200, b'{"token": "a b\\r\\nX-Injected: 1"}'),
            "bearer-tokenint": (200, b'{"token": 5}'),
            "bearer-500": (500, b"{}"),
        }
        status, body = answers.get(behaviour, (404, b"{}"))
        return self.send(request, status, body, {"Content-Type": "application/json"})

    def redirect(self, request: BaseHTTPRequestHandler, location: str) -> None:
        return self.send(request, 307, b"", {"Location": location})

    def send(
        self, request: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(body)
