"""The kaggle client is checked for the features kernelpack uses from its private parts, not for
one version: a client lacking one is refused in one line naming each missing feature, and a
version outside the tested range runs after one warning line. (The Kaggle command tests
themselves were run against kaggle 2.1.1 and 2.2.5 as well; docs/install.md.)"""

import os
import subprocess
import sys

import pytest
from kaggle_helpers import USER

from kernelpack.cli import main
from kernelpack.errors import KaggleError
from kernelpack.kaggle import _client_internals as internals


def _kaggle_api():
    from kaggle.api.kaggle_api_extended import KaggleApi

    return KaggleApi


@pytest.fixture
def fresh_routed_class():
    """The routed client class is made (and checked) once per process: again, around a test."""
    internals.routed_api_class.cache_clear()
    yield
    internals.routed_api_class.cache_clear()


def test_the_installed_client_has_every_feature():
    assert internals.missing_features(_kaggle_api()) == []


def test_a_client_older_than_the_features_is_refused_naming_each_missing_one():
    """kaggle 2.1.0's shapes of two calls, on the real client class: no `format` for
    dataset_status, and a with_retry without max_retries."""

    class OlderApi(_kaggle_api()):
        def dataset_status(self, dataset):
            return super().dataset_status(dataset)

        def with_retry(self, func):
            return super().with_retry(func)

    missing = internals.missing_features(OlderApi)
    assert missing == [
        "KaggleApi.with_retry(method, max_retries=)",
        "KaggleApi.dataset_status(dataset, format=) (a dataset's version number, kaggle 2.1.1+)"]
    with pytest.raises(KaggleError) as caught:
        internals.check_client(OlderApi, {"kaggle": "2.1.0", "kagglesdk": "0.1.20"})
    assert str(caught.value) == (
        "the installed client (kaggle 2.1.0 / kagglesdk 0.1.20) lacks what kernelpack uses from "
        f"it: {'; '.join(missing)}; install a tested one with `pip install 'kaggle>=2.1.1,<3'`")


def test_a_missing_private_part_stops_the_command_in_one_line(tmp_path, monkeypatch, capsys,
                                                             fresh_routed_class):
    """The real client module with one private method taken away, as a release might."""
    monkeypatch.delattr(_kaggle_api(), "_upload_file")
    monkeypatch.setenv("HOME", str(tmp_path))
    code = main(["kernel", "status", f"{USER}/any", "--kaggle-url", "http://127.0.0.1:9"])
    assert code == 1
    versions = " / ".join(f"{name} {version}"
                          for name, version in internals.installed_versions().items())
    assert capsys.readouterr().err.splitlines() == [
        f"kernelpack: error: the installed client ({versions}) lacks what "
        "kernelpack uses from it: KaggleApi._upload_file(file_name, full_path, ...) (a failed "
        "upload stops the push); install a tested one with `pip install 'kaggle>=2.1.1,<3'`"]


def test_kagglesdk_without_its_endpoint_attribute_is_named(monkeypatch):
    from kagglesdk import kaggle_http_client

    original = kaggle_http_client.KaggleHttpClient.__init__

    def without_endpoint(self, *args, **kwargs):
        original(self, *args, **kwargs)
        del self._endpoint

    monkeypatch.setattr(kaggle_http_client.KaggleHttpClient, "__init__", without_endpoint)
    assert internals.missing_features(_kaggle_api()) == [
        "kagglesdk KaggleClient._http_client._endpoint (kagglesdk has no endpoint setting)"]


@pytest.mark.parametrize("installed, note", [
    ({"kaggle": "2.2.4", "kagglesdk": "0.1.37"}, None),
    ({"kaggle": "2.1.1", "kagglesdk": "0.1.28"}, None),
    ({"kaggle": "2.2.5", "kagglesdk": "0.1.38"}, None),
    ({"kaggle": "2.3.0", "kagglesdk": "0.1.37"},
     "kernelpack: warning: kaggle 2.3.0 is newer than the newest tested (2.2.5); it has every "
     "client feature kernelpack uses, so it runs, but an error from the client may be this "
     "version's"),
    ({"kaggle": "2.2.4", "kagglesdk": "0.1.22"},
     "kernelpack: warning: kagglesdk 0.1.22 is older than the oldest tested (0.1.28); it has "
     "every client feature kernelpack uses, so it runs, but an error from the client may be "
     "this version's"),
    ({"kaggle": "3.0.0rc1", "kagglesdk": None}, "kernelpack: warning: kaggle 3.0.0rc1 is newer"),
])
def test_versions_outside_the_tested_range_get_a_note(installed, note):
    found = internals.untested_note(installed)
    assert found == note or (note and found.startswith(note))


def _shadowed(tmp_path, version):
    """An environment in which kaggle's installed metadata says `version` (the code is the
    installed client's)."""
    shadow = tmp_path / "shadow"
    info = shadow / f"kaggle-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kaggle\nVersion: {version}\n")
    return {**os.environ, "PYTHONPATH": str(shadow), "NO_ALBUMENTATIONS_UPDATE": "1",
            "HOME": str(tmp_path)}


@pytest.mark.parametrize("version, warned", [("9.0.0", True), ("2.2.4", False)])
def test_an_untested_version_runs_after_one_warning_line(tmp_path, version, warned):
    command = [sys.executable, "-m", "kernelpack", "kernel", "status", f"{USER}/any",
               "--kaggle-url", "http://127.0.0.1:9"]
    done = subprocess.run(command, env=_shadowed(tmp_path, version), capture_output=True,
                          text=True, timeout=60)
    lines = done.stderr.splitlines()
    # It ran: what stops it is the missing credentials, as with a tested client.
    assert done.returncode == 1 and "no Kaggle credentials found" in lines[-1]
    warnings = [line for line in lines if "warning" in line]
    if warned:
        assert warnings == [
            f"kernelpack: warning: kaggle {version} is newer than the newest tested (2.2.5); it "
            "has every client feature kernelpack uses, so it runs, but an error from the client "
            "may be this version's"]
        assert len(lines) == 2
    else:
        assert warnings == [] and len(lines) == 1
