"""The HTTP side: JSON RPCs at `/v1/SERVICE/METHOD` and `/api/v1/SERVICE/METHOD` (origin-form, or
absolute-form when the client uses the service as its HTTP proxy), blob PUTs at `/upload/TOKEN`,
kernel output files at `/files/kernels/OWNER/SLUG/N/NAME`.

Links handed to the client (upload URLs, output URLs) are built from the request's own host, so
they work both when the client talks to 127.0.0.1:PORT directly and when it sends
`http://localhost/...` through the service as a proxy.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .accounts import Accounts
from .blobs import UNCLAIMED_UPLOAD_SECONDS, BlobStore
from .competitions import Competitions
from .datasets import Datasets
from .faults import DROP, RETRY_AFTER_SECONDS, Fault, FaultPlan
from .kernels import Kernels
from .models import Models
from .run_queue import Runner
from .sources import Sources
from .store import Store
from .wire import ApiError

_RPC = re.compile(r"^(?:/api)?/v1/([\w.]+)/(\w+)$")
_OUTPUT = re.compile(r"^/files/kernels/([^/]+)/([^/]+)/(\d{1,9})/(.+)$")
_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?")
# A kernel's source is the biggest thing a JSON call carries.
_RPC_BODY_LIMIT = 64 << 20
# What a handler raises when a request's fields have the wrong shape or type.
_BAD_REQUEST = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
                RecursionError)
# A client that announces a body and never sends it would otherwise hold a thread for good.
_SECONDS_BEFORE_DROPPING_A_SILENT_CLIENT = 30

Handler = Callable[[str, dict, str], dict]


class KaggleService:
    """The local Kaggle service over a state folder; `start()` serves on a background thread.

    `users` (name -> key) are added to the ones kept in the root; `upload_seconds` is how long
    an upload may sit unclaimed (unfinished, or refused after it arrived) before it is deleted;
    `flat_input` mounts kernel sources as Kaggle did before (`input/<slug>`), not as it does
    today (`input/competitions/<slug>`, `input/datasets/<owner>/<slug>`, ...; see sources.py);
    `workers` is how many kernel runs go at once (see run_queue.py).
    """

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0,
                 processing_seconds: float = 0.0, users: dict[str, str] | None = None,
                 upload_seconds: float = UNCLAIMED_UPLOAD_SECONDS,
                 flat_input: bool = False, workers: int = 1) -> None:
        self.store = Store(root)
        self.accounts = Accounts(self.store)
        for name, key in (users or {}).items():
            self.accounts.add_user(name, key)
        self.faults = FaultPlan()
        self.blobs = BlobStore(self.store, upload_seconds)
        self.blobs.clean()
        self.runner = Runner(processing_seconds, self.store.root, workers)
        self.datasets = Datasets(self.store, self.blobs, processing_seconds)
        self.models = Models(self.store, self.blobs, processing_seconds)
        sources = Sources(self.store, self.datasets, self.models, flat=flat_input)
        self.kernels = Kernels(self.store, sources, self.runner, self.accounts.sign)
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
            "CreateModel": self.models.create,
            "GetModel": self.models.get,
            "CreateModelInstance": self.models.create_instance,
            "GetModelInstance": self.models.get_instance,
            "CreateModelInstanceVersion": self.models.create_version,
            "ListModelInstanceVersionFiles": self.models.list_files,
            "SaveKernel": self.kernels.save,
            "GetKernelSessionStatus": self.kernels.status,
            "ListKernelSessionOutput": self.kernels.output,
            "GetKernel": self.kernels.get,
            "CreateCodeSubmission": self.competitions.create_code_submission,
            "GetSubmission": self.competitions.get_submission,
            "ListSubmissions": self.competitions.list_submissions,
            "GetSubmissionLimits": self.competitions.limits,
        }
        self.httpd = _Server((host, port), _RequestHandler)
        self.httpd.daemon_threads = True
        self.httpd.service = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def blobs_start(self, user: str, request: dict, base_url: str) -> dict:
        self.blobs.clean()      # now and then, not on a timer: uploads are when orphans appear
        return self.blobs.start(request, base_url)

    def add_user(self, name: str, key: str) -> None:
        """Accept `name` with `key` (HTTP Basic, as kaggle.json is sent); kept on disk."""
        self.accounts.add_user(name, key)

    def add_token(self, token: str, user: str) -> None:
        """Accept `token` (as KAGGLE_API_TOKEN sends it) for `user`; kept on disk."""
        self.accounts.add_token(token, user)

    def introspect_token(self, user: str, request: dict, base_url: str) -> dict:
        token = request.get("token", "")
        owner = self.accounts.tokens().get(token) if isinstance(token, str) else None
        return {"active": True, "username": owner} if owner else {"active": False}

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
        """Serve on this thread until interrupted (Ctrl-C, or SIGTERM turned into one by the
        command). The run going is killed with every process it started; its version stays
        RUNNING on disk and is run again when the service next starts."""
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()
            self.runner.stop()

    def __enter__(self) -> KaggleService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """One line, not a traceback, when a connection fails outside a request's handling."""
        print(f"kaggle service: connection from {client_address} failed: {sys.exc_info()[1]!r}",
              file=sys.stderr)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _SECONDS_BEFORE_DROPPING_A_SILENT_CLIENT

    @property
    def service(self) -> KaggleService:
        return self.server.service  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a rehearsal service should not fill the terminal with access logs."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None
                   ) -> None:
        """http.server's own refusals (bad request line, headers too long, unknown method) in
        the JSON form every other answer has; an unknown method is 405, not 501."""
        self.close_connection = True
        code = 405 if code == 501 else code
        self._error(ApiError(code, message or HTTPStatus(code).phrase))

    def _target(self) -> tuple[str, dict[str, list[str]]]:
        # Absolute-form (`POST http://localhost/api/v1/...`) when the client uses us as a proxy.
        parts = urllib.parse.urlsplit(self.path)
        return parts.path, urllib.parse.parse_qs(parts.query)

    def _base_url(self) -> str:
        host = self.headers.get("Host") or ""
        if not _HOST.fullmatch(host):
            host = self.service.url.split("//", 1)[1]
        return f"http://{host}"

    def _length(self, limit: int) -> int:
        """The declared body length, checked before anything is read."""
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "chunked request bodies are not accepted; send Content-Length")
        declared = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        if not declared:
            return 0
        raw = declared.pop()
        if declared or not (raw.isascii() and raw.isdigit()) or len(raw) > 15:
            raise ApiError(400, f"bad Content-Length {raw!r}: one whole number of bytes")
        if int(raw) > limit:
            raise ApiError(413, f"request body of {raw} bytes is over the {limit}-byte limit")
        return int(raw)

    def _send(self, status: int, payload: object, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self._never_http_0_9()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _never_http_0_9(self) -> None:
        """http.server takes a request line without a version for HTTP/0.9 and would answer
        without status or headers, which no client can read: answer as HTTP/1.0 and close."""
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
            self.close_connection = True

    def _error(self, error: ApiError) -> None:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if error.code == 429 else None
        self._send(error.code, {"code": error.code, "message": error.message}, headers)

    def _strike(self, fault: Fault) -> None:
        if fault.kind == DROP:
            self.close_connection = True    # hang up without an answer
            return
        self._error(ApiError(int(fault.kind), f"injected fault {fault.kind} on {fault.target}"))

    def _answer(self, serve: Callable[[], None]) -> None:
        """Every request ends in an answer: ApiError as itself, a request the handlers could not
        use as a 400, anything else as a 500 (never a traceback or a dropped connection)."""
        try:
            serve()
        except ApiError as exc:
            self._error(exc)
        except _BAD_REQUEST as exc:
            self._error(ApiError(400, f"bad request: {type(exc).__name__}: {exc}"[:500]))
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:     # a bug: answer, say it in one line, keep serving
            print(f"kaggle service: {self.command} {self.path[:200]}: internal error: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
            self.close_connection = True
            self._error(ApiError(500, f"internal error: {type(exc).__name__}"))

    def do_POST(self) -> None:
        self._answer(self._post)

    def do_PUT(self) -> None:
        self._answer(self._put)

    def do_GET(self) -> None:
        self._answer(self._get)

    def _post(self) -> None:
        path, _ = self._target()
        try:
            length = self._length(_RPC_BODY_LIMIT)
        except ApiError:
            self.close_connection = True     # the body is not read
            raise
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self.close_connection = True
            raise ApiError(400, f"the body ended after {len(body)} of {length} declared bytes")
        match = _RPC.match(path)
        if not match:
            raise ApiError(404, f"no such endpoint {path[:200]}")
        method = match[2]
        fault = self.service.faults.take(method)
        if fault:
            return self._strike(fault)
        handler = self.service.methods.get(method)
        if handler is None:
            raise ApiError(404, f"{match[1]}/{method} is not implemented by the local service")
        try:
            request = json.loads(body or b"{}")
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, f"bad {method} request: the body is not JSON ({exc})") from None
        if not isinstance(request, dict):
            raise ApiError(400, f"bad {method} request: the body must be a JSON object, got "
                                f"{type(request).__name__}")
        # Token introspection is how a client signs in, so it needs no credentials.
        user = "" if method == "IntrospectToken" else \
            self.service.accounts.user(self.headers.get("Authorization"))
        self._send(200, handler(user, request, self._base_url()))

    def _put(self) -> None:
        path, _ = self._target()
        try:
            if not path.startswith("/upload/"):
                raise ApiError(404, f"no such endpoint {path[:200]}")
            # The upload token, handed out to a signed-in user, is the credential (as the
            # signed storage links of the real service are).
            token = path[len("/upload/"):]
            length = self._length(self.service.blobs.max_put(token))
            content_range = self.headers.get("Content-Range")
            fault = self.service.faults.take("upload")
            if fault:
                self.service.blobs.put(token, content_range, self.rfile, length, keep=length // 2)
                return self._strike(fault)
            status, headers = self.service.blobs.put(token, content_range, self.rfile, length)
        except ApiError:
            self.close_connection = True     # the body may be unread
            raise
        self._send(status, {}, headers)

    def _get(self) -> None:
        path, query = self._target()
        match = _OUTPUT.match(path)
        if not match:
            raise ApiError(404, f"no such file {path[:200]}")
        # Output links are signed (the client fetches them without credentials); anything else
        # needs credentials, and then the kernel must be visible to that user.
        if not self.service.accounts.signed(path, query):
            user = self.service.accounts.user(self.headers.get("Authorization"))
            self.service.kernels.record(match[1], match[2], user)
        file = self.service.kernels.output_file(match[1], match[2], match[3],
                                                urllib.parse.unquote(match[4]))
        self._never_http_0_9()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(file.stat().st_size))
        self.send_header("Last-Modified", self.date_time_string(file.stat().st_mtime))
        self.end_headers()
        with open(file, "rb") as stream:
            shutil.copyfileobj(stream, self.wfile)
