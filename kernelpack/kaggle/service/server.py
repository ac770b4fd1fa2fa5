"""The HTTP side: JSON RPCs at `/v1/SERVICE/METHOD` and `/api/v1/SERVICE/METHOD` (origin-form, or
absolute-form when the client uses the service as its HTTP proxy), blob PUTs at `/upload/TOKEN`,
kernel output files at `/files/kernels/OWNER/SLUG/N/NAME`.

Links handed to the client (upload URLs, output URLs) are built from the request's own host, so
they work both when the client talks to 127.0.0.1:PORT directly and when it sends
`http://localhost/...` through the service as a proxy.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .blobs import BlobStore
from .competitions import Competitions
from .datasets import Datasets
from .faults import DROP, RETRY_AFTER_SECONDS, Fault, FaultPlan
from .kernels import Kernels
from .run_queue import Runner
from .sources import Sources
from .store import Store
from .wire import ApiError

_RPC = re.compile(r"^(?:/api)?/v1/([\w.]+)/(\w+)$")
_OUTPUT = re.compile(r"^/files/kernels/([^/]+)/([^/]+)/(\d+)/(.+)$")
# A client that announces a body and never sends it would otherwise hold a thread for good.
_SECONDS_BEFORE_DROPPING_A_SILENT_CLIENT = 30

Handler = Callable[[str, dict, str], dict]


class KaggleService:
    """The local Kaggle service over a state folder; `start()` serves on a background thread."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0,
                 processing_seconds: float = 0.0) -> None:
        self.store = Store(root)
        self.faults = FaultPlan()
        self.blobs = BlobStore(self.store)
        self.runner = Runner(processing_seconds, self.store.root)
        self.datasets = Datasets(self.store, self.blobs, processing_seconds)
        sources = Sources(self.store, self.datasets)
        self.kernels = Kernels(self.store, sources, self.runner)
        self.competitions = Competitions(self.store, self.kernels, sources, self.runner)
        self.kernels.resume_unfinished()
        self.competitions.resume_unfinished()
        self.methods: dict[str, Handler] = {
            "IntrospectToken": self.introspect_token,
            "StartBlobUpload": self.blobs_start,
            "CreateDataset": self.datasets.create,
            "CreateDatasetVersion": self.datasets.create_version,
            "GetDatasetStatus": self.datasets.status,
            "GetDataset": self.datasets.get,
            "ListDatasetFiles": self.datasets.list_files,
            "SaveKernel": self.kernels.save,
            "GetKernelSessionStatus": self.kernels.status,
            "ListKernelSessionOutput": self.kernels.output,
            "GetKernel": self.kernels.get,
            "CreateCodeSubmission": self.competitions.create_code_submission,
            "GetSubmission": self.competitions.get_submission,
            "ListSubmissions": self.competitions.list_submissions,
            "GetSubmissionLimits": self.competitions.limits,
        }
        self.httpd = ThreadingHTTPServer((host, port), _RequestHandler)
        self.httpd.daemon_threads = True
        self.httpd.service = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def blobs_start(self, user: str, request: dict, base_url: str) -> dict:
        return self.blobs.start(request, base_url)

    def add_token(self, token: str, user: str) -> None:
        """Accept `token` (as KAGGLE_API_TOKEN sends it) for `user`; kept on disk."""
        with self.store.lock:
            self.store.write({**self.tokens(), token: user}, "tokens.json")

    def tokens(self) -> dict[str, str]:
        return self.store.read("tokens.json") or {}

    def introspect_token(self, user: str, request: dict, base_url: str) -> dict:
        owner = self.tokens().get(request.get("token", ""))
        return {"active": True, "username": owner} if owner else {"active": False}

    def user(self, authorization: str | None) -> str:
        """The user named by HTTP Basic credentials (the key is not checked: this is a
        rehearsal), or by a token added with `add_token`."""
        scheme, _, value = (authorization or "").partition(" ")
        if scheme == "Bearer" and value in self.tokens():
            return self.tokens()[value]
        if scheme == "Basic":
            try:
                user = base64.b64decode(value).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                user = ""
            if user:
                return user
        raise ApiError(401, "no valid credentials; put username and key in kaggle.json or set "
                            "KAGGLE_USERNAME and KAGGLE_KEY")

    def start(self) -> KaggleService:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        name="kaggle-service")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.runner.stop()

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted (Ctrl-C). A run still going is not waited for:
        its version stays RUNNING on disk and is run again when the service next starts."""
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def __enter__(self) -> KaggleService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _SECONDS_BEFORE_DROPPING_A_SILENT_CLIENT

    @property
    def service(self) -> KaggleService:
        return self.server.service  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a rehearsal service should not fill the terminal with access logs."""

    def _target(self) -> str:
        # Absolute-form (`POST http://localhost/api/v1/...`) when the client uses us as a proxy.
        return urllib.parse.urlsplit(self.path).path

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host') or self.service.url.split('//', 1)[1]}"

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, error: ApiError) -> None:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if error.code == 429 else None
        self._send(error.code, {"code": error.code, "message": error.message}, headers)

    def _strike(self, fault: Fault) -> None:
        if fault.kind == DROP:
            self.close_connection = True    # hang up without an answer
            return
        self._error(ApiError(int(fault.kind), f"injected fault {fault.kind} on {fault.target}"))

    def do_POST(self) -> None:
        match = _RPC.match(self._target())
        body = self._body()
        if not match:
            return self._error(ApiError(404, f"no such endpoint {self._target()}"))
        method = match[2]
        fault = self.service.faults.take(method)
        if fault:
            return self._strike(fault)
        handler = self.service.methods.get(method)
        try:
            if handler is None:
                raise ApiError(404, f"{match[1]}/{method} is not implemented by the local "
                                    "service")
            request = json.loads(body or b"{}")
            # Token introspection is how a client signs in, so it needs no credentials.
            user = "" if method == "IntrospectToken" else \
                self.service.user(self.headers.get("Authorization"))
            self._send(200, handler(user, request, self._base_url()))
        except ApiError as exc:
            self._error(exc)
        except (ValueError, TypeError, KeyError) as exc:
            self._error(ApiError(400, f"bad {method} request: {exc}"))

    def do_PUT(self) -> None:
        target = self._target()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            if not target.startswith("/upload/"):
                raise ApiError(404, f"no such endpoint {target}")
            token = target[len("/upload/"):]
            content_range = self.headers.get("Content-Range")
            fault = self.service.faults.take("upload")
            if fault:
                self.service.blobs.put(token, content_range, self.rfile, length, keep=length // 2)
                return self._strike(fault)
            status, headers = self.service.blobs.put(token, content_range, self.rfile, length)
            self._send(status, {}, headers)
        except ApiError as exc:
            self.close_connection = True     # the body may be unread
            self._error(exc)

    def do_GET(self) -> None:
        match = _OUTPUT.match(self._target())
        try:
            if not match:
                raise ApiError(404, f"no such file {self._target()}")
            path = self.service.kernels.output_file(*match.groups())
        except ApiError as exc:
            return self._error(exc)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Last-Modified", self.date_time_string(path.stat().st_mtime))
        self.end_headers()
        with open(path, "rb") as stream:
            shutil.copyfileobj(stream, self.wfile)
