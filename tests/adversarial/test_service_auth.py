"""Every call to the local service needs a known user with that user's key (or a known token),
file downloads included, and a refusal is the 401 the real client understands."""

import http.client
import json
import urllib.parse

import pytest
from kaggle_helpers import (
    KEY,
    PREDICT_ONES,
    USER,
    kaggle_world,
    run_kaggle,
    tiny_kernel,
    write_files,
)

from kernelpack.kaggle.service import add_competition
from kernelpack.kaggle.session import KaggleSession

# Every test here starts the local Kaggle service (half a second to stop it alone).
pytestmark = pytest.mark.slow

NO_AUTH_NEEDED = {"IntrospectToken"}       # how a client signs in with a token


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


def _kaggle_as(world, tmp_path, username: str, key: str, *args: str):
    home = tmp_path / f"home-{username}-{len(key)}"
    (home / "config").mkdir(parents=True, exist_ok=True)
    credentials = home / "config" / "kaggle.json"
    credentials.write_text(json.dumps({"username": username, "key": key}))
    credentials.chmod(0o600)
    return run_kaggle(home, world.tmp, world.url, *args)


def _request(world, method: str, target: str, body: bytes = b"", headers: dict | None = None):
    host, port = urllib.parse.urlsplit(world.url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request(method, target, body=body, headers=headers or {})
    answer = connection.getresponse()
    return answer.status, answer.read()


def test_a_wrong_key_or_an_unknown_user_is_refused_by_the_real_client(world, tmp_path):
    kernel = tiny_kernel(tmp_path / "k", "mine-kernel", "print(1)\n")
    assert world.kaggle("kernels", "push", "-p", str(kernel)).returncode == 0
    # The client recognises the 401 and words it itself.
    refused = _kaggle_as(world, tmp_path, USER, "a-wrong-key", "kernels", "status",
                         f"{USER}/mine-kernel")
    assert refused.returncode == 1 and "Permission 'kernels.get' was denied" in refused.stderr
    for username, key in ((USER, "a-wrong-key"), ("nobody-known", KEY)):
        refused = _kaggle_as(world, tmp_path, username, key, "datasets", "status",
                             f"{USER}/any-data")
        assert refused.returncode == 1, (username, key, refused)
        assert refused.stdout.startswith("Authentication required to call the Kaggle API"), \
            refused
    accepted = world.kaggle("kernels", "status", f"{USER}/mine-kernel")
    assert accepted.returncode == 0 and "has status" in accepted.stdout, accepted


CALLS = ["StartBlobUpload", "CreateDataset", "CreateDatasetVersion", "GetDatasetStatus",
         "GetDataset", "ListDatasetFiles", "SaveKernel", "GetKernelSessionStatus",
         "ListKernelSessionOutput", "GetKernel", "CreateCodeSubmission", "GetSubmission",
         "ListSubmissions", "GetSubmissionLimits", "CreateModel", "GetModel",
         "CreateModelInstance", "GetModelInstance", "CreateModelInstanceVersion",
         "ListModelInstanceVersionFiles"]


def test_the_list_of_calls_is_every_call_the_service_has(world):
    assert set(world.service.methods) == set(CALLS) | NO_AUTH_NEEDED


@pytest.mark.parametrize("method", CALLS)
def test_every_call_without_credentials_is_a_401_in_the_clients_error_form(world, method):
    for headers in ({}, {"Authorization": "Basic !!!"}, {"Authorization": "Bearer no-such"},
                    {"Authorization": "Basic " + "dGVzdGVyOndyb25n"}):     # tester:wrong
        status, body = _request(world, "POST", f"/api/v1/any.Service/{method}", b"{}",
                                {"Content-Type": "application/json", **headers})
        assert status == 401, (method, headers, body)
        answer = json.loads(body)
        assert answer["code"] == 401 and answer["message"].startswith("Unauthenticated")


def test_kernel_output_files_need_credentials_or_the_signed_link(world, tmp_path):
    kernel = tiny_kernel(tmp_path / "k", "output-kernel",
                         'open("submission.csv", "w").write("id,label\\na,1\\n")\n')
    assert world.kaggle("kernels", "push", "-p", str(kernel)).returncode == 0
    world.service.runner.wait_idle()
    plain = f"/files/kernels/{USER}/output-kernel/1/submission.csv"
    assert _request(world, "GET", plain)[0] == 401
    # The real client downloads through the signed links the service lists.
    out = tmp_path / "out"
    assert world.kaggle("kernels", "output", f"{USER}/output-kernel", "-p", str(out)) \
        .returncode == 0
    assert (out / "submission.csv").read_text() == "id,label\na,1\n"
    status, body = _request(world, "POST", "/api/v1/k.KernelsApiService/ListKernelSessionOutput",
                            json.dumps({"userName": USER, "kernelSlug": "output-kernel"}).encode(),
                            {"Authorization": "Basic dGVzdGVyOm5vdC1hLXJlYWwta2V5"})
    assert status == 200, body
    [listed] = json.loads(body)["files"]
    signed = urllib.parse.urlsplit(listed["url"])
    assert _request(world, "GET", f"{signed.path}?{signed.query}") == (200, b"id,label\na,1\n")
    tampered = signed.query.replace("signature=", "signature=0")
    assert _request(world, "GET", f"{signed.path}?{tampered}")[0] == 401
    other_file = signed.path.replace("submission.csv", "kernel.log")
    assert _request(world, "GET", f"{other_file}?{signed.query}")[0] == 401
    # With the owner's credentials a plain GET works; another user's do not see a private one.
    owner = {"Authorization": "Basic dGVzdGVyOm5vdC1hLXJlYWwta2V5"}      # tester:not-a-real-key
    assert _request(world, "GET", plain, headers=owner)[0] == 200
    world.service.add_user("someone", "k")
    someone = {"Authorization": "Basic c29tZW9uZTpr"}                    # someone:k
    assert _request(world, "GET", plain, headers=someone)[0] == 404


def test_someone_elses_public_kernel_cannot_be_submitted_as_ones_own(world, tmp_path,
                                                                     monkeypatch):
    data = write_files(tmp_path / "data", {"sample_submission.csv": b"id,label\na,0\n"})
    (tmp_path / "solution.csv").write_text("id,label\na,1\n")
    add_competition(world.root, "tinycomp", data, tmp_path / "solution.csv")
    world.service.add_user("someone", "k")
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    kernel = tiny_kernel(tmp_path / "k", "public-kernel", PREDICT_ONES, id="someone/public-kernel",
                         is_private=False, competition_sources=["tinycomp"])
    assert KaggleSession(world.url).push_kernel(kernel, wait=True).status == "COMPLETE"
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    taken = world.kernelpack("submit", "tinycomp", "--kernel", "someone/public-kernel")
    assert taken.returncode == 1 and "is not yours" in taken.stderr, taken
    assert not world.stored("submissions").exists()
