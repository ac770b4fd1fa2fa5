"""Malformed requests to the local service: each gets a JSON 4xx, never a traceback, a 5xx or a
dropped connection, and the service keeps answering. Sent raw (http.client, sockets): the real
client never sends these."""

import base64
import json
import socket
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kaggle_helpers import KEY, USER, kaggle_world

# Every test here starts the local Kaggle service (half a second to stop it alone).
pytestmark = pytest.mark.slow

AUTH = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
RPC = "/api/v1/datasets.DatasetApiService/"


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


def _raw(world, request: bytes, timeout: float = 10) -> tuple[int, dict | None]:
    """Send `request` as bytes on a new connection; (status, JSON body) of the answer. A dropped
    connection or a silent service fails the test."""
    host, port = urllib.parse.urlsplit(world.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer, "the service hung up without an answer"
    head, _, body = answer.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100 "):         # an interim answer to Expect: 100-continue
        head, _, body = body.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), len(body))
    return status, (json.loads(body[:length]) if length else None)


def _post(method: str, body: bytes, extra: str = "", length: str | None = None) -> bytes:
    declared = str(len(body)) if length is None else length
    return (f"POST {RPC}{method} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {AUTH}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n{extra}\r\n"
            ).encode() + body


def _still_answers(world) -> None:
    status, answer = _raw(world, _post("IntrospectToken", b'{"token": "none"}'))
    assert (status, answer) == (200, {"active": False})


@pytest.mark.parametrize("name, request_bytes, status", [
    ("300-character file name", _post("StartBlobUpload", json.dumps(
        {"name": "a" * 300, "contentLength": 3}).encode()), 400),
    ("JSON list body", _post("CreateDataset", b"[1, 2]"), 400),
    ("JSON string body", _post("GetDataset", b'"x"'), 400),
    ("not JSON", _post("GetDataset", b"\xff\xfe{"), 400),
    ("deeply nested JSON", _post("GetDataset", b"[" * 100000 + b"]" * 100000), 400),
    ("huge number", _post("GetSubmission", b'{"ref": 1e999}'), 400),
    ("wrong field types", _post("CreateDataset", json.dumps(
        {"ownerSlug": USER, "slug": "x-data", "files": "abc", "title": ["t"]}).encode()), 400),
    ("files not objects", _post("CreateDataset", json.dumps(
        {"ownerSlug": USER, "slug": "x-data", "files": [1, None]}).encode()), 400),
    ("negative upload length", _post("StartBlobUpload", json.dumps(
        {"name": "w.bin", "contentLength": -5}).encode()), 400),
    ("letters as Content-Length", _post("GetDataset", b"{}", length="abc"), 400),
    ("negative Content-Length", _post("GetDataset", b"{}", length="-5"), 400),
    ("two Content-Lengths", _post("GetDataset", b"{}", extra="Content-Length: 7\r\n"), 400),
    ("Content-Length over the limit", _post("GetDataset", b"{}", length=str(10**12)), 413),
    ("chunked body", _post("GetDataset", b"2\r\n{}\r\n0\r\n\r\n",
                           extra="Transfer-Encoding: chunked\r\n"), 411),
    ("unknown HTTP method", b"DELETE /api/v1/x/GetDataset HTTP/1.1\r\nHost: h\r\n\r\n", 405),
    ("garbage request line", b"\x00\x01 nonsense\r\n\r\n", 400),
    ("session timeout not a number", b"", 400),
])
def test_a_malformed_request_is_a_json_4xx_and_the_service_stays_up(world, name, request_bytes,
                                                                    status):
    if name == "session timeout not a number":
        request_bytes = _post("SaveKernel", json.dumps(
            {"slug": f"{USER}/t-kernel", "text": "print(1)", "language": "python",
             "kernelType": "script", "sessionTimeoutSeconds": "soon"}).encode()).replace(
            b"DatasetApiService", b"KernelsApiService")
    answered, body = _raw(world, request_bytes)
    assert answered == status, (name, body)
    assert body is not None and body["code"] == status and body["message"], body
    _still_answers(world)


def test_a_body_shorter_than_declared_is_a_400_not_a_hang(world):
    answered, body = _raw(world, _post("GetDataset", b"{}", length="50"))
    assert answered == 400 and "ended after 2 of 50" in body["message"]
    _still_answers(world)


def _start_upload(world, length: int) -> str:
    status, answer = _raw(world, _post("StartBlobUpload", json.dumps(
        {"name": "w.bin", "contentLength": length}).encode()))
    assert status == 200, answer
    return urllib.parse.urlsplit(answer["createUrl"]).path


def _put(path: str, body: bytes, content_range: str | None = None) -> bytes:
    extra = f"Content-Range: {content_range}\r\n" if content_range else ""
    return (f"PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n{extra}"
            "\r\n").encode() + body


def test_an_upload_body_longer_than_declared_is_refused_and_nothing_is_kept(world):
    path = _start_upload(world, 10)
    status, answer = _raw(world, _put(path, b"x" * 20))
    assert status == 413 and "10-byte limit" in answer["message"], answer
    assert _raw(world, _put(path, b"a" * 5, "bytes 0-4/10"))[0] == 308
    status, answer = _raw(world, _put(path, b"y" * 8, "bytes 5-12/10"))
    assert status == 400 and "past the declared 10" in answer["message"], answer
    token = path.rsplit("/", 1)[1]
    assert world.stored("blobs", f"{token}.part").read_bytes() == b"a" * 5
    assert _raw(world, _put(path, b"z" * 5, "bytes 5-9/10"))[0] == 200
    assert world.stored("blobs", f"{token}.part").read_bytes() == b"a" * 5 + b"z" * 5


# Bodies the handlers see: objects with the fields they read, of any JSON type.
FIELDS = ["ownerSlug", "slug", "datasetSlug", "userName", "kernelSlug", "name", "contentLength",
          "files", "token", "text", "language", "kernelType", "body", "ref", "competitionName",
          "kernelVersion", "fileName", "datasetVersionNumber", "versionLabel", "isPrivate",
          "sessionTimeoutSeconds", "datasetDataSources", "title", "modelSlug", "instanceSlug",
          "framework", "versionNumber", "pageSize", "pageToken", "licenseName"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300)
    | st.sampled_from([USER, f"{USER}/x", "..", "python", "script", "v1", "a" * 300,
                       "MODEL_FRAMEWORK_PY_TORCH", "pyTorch"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
BODIES = (st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6)
          .map(lambda body: json.dumps(body).encode())
          | st.binary(max_size=200) | JSON_VALUES.map(lambda value: json.dumps(value).encode()))
METHODS = ["IntrospectToken", "StartBlobUpload", "CreateDataset", "CreateDatasetVersion",
           "GetDatasetStatus", "GetDataset", "ListDatasetFiles", "SaveKernel",
           "GetKernelSessionStatus", "ListKernelSessionOutput", "GetKernel",
           "CreateCodeSubmission", "GetSubmission", "ListSubmissions", "GetSubmissionLimits",
           "CreateModel", "GetModel", "CreateModelInstance", "GetModelInstance",
           "CreateModelInstanceVersion", "ListModelInstanceVersionFiles"]
PATHS = (st.sampled_from(METHODS).map(lambda method: f"/api/v1/any.Service/{method}")
         | st.sampled_from(["/upload/", "/files/kernels/", "/v1/", "/", "//", "/api/v1/a/b/c"])
         .flatmap(lambda head: st.text(max_size=60).map(
             lambda tail: head + urllib.parse.quote(tail, safe="/?=&"))))
HEADERS = st.dictionaries(
    st.sampled_from(["Authorization", "Content-Range", "Host", "Content-Type", "Expect",
                     "X-Anything"]),
    st.sampled_from([AUTH, "Basic " + "A" * 30, "Bearer x", "bytes */10", "bytes 0-3/4",
                     "bytes 9-2/x", "localhost", "a b c", "", "100-continue"])
    | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(verb=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "PATCH", "OPTIONS"]),
       path=PATHS, headers=HEADERS, body=BODIES)
def test_fuzzed_requests_always_get_an_answer_below_500(world, verb, path, headers, body):
    lines = [f"{verb} {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    if "Host" not in headers:
        lines.append("Host: localhost")
    request = ("\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode()
    status, answer = _raw(world, request + body)
    assert 200 <= status < 500, (status, answer)
    if status >= 400:
        assert answer["code"] == status and answer["message"], answer
    _still_answers(world)
