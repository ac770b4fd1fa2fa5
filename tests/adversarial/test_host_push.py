"""`kernel push` reads whether a kernel embeds its key from the kernel's content: deleting the
marker line, or re-wrapping the key, does not let a keyed kernel go public."""

from __future__ import annotations

import json

import pytest
from kaggle_helpers import USER, kaggle_world

from kernelpack.kernel.build import build_kernel, embeds_key

# Every test here starts the local Kaggle service (half a second to stop it alone).
pytestmark = pytest.mark.slow

KEY = bytes(range(32))
CONFIG = f"""\
models: [{{name: a}}]
test: {{images: comp/test}}
submission: {{format: multiclass}}
kernel: {{id: {USER}/keyed-kernel, is_private: true}}
"""


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("built")
    (folder / "ensemble.yml").write_text(CONFIG)
    keyed = build_kernel(folder / "ensemble.yml", folder / "keyed", key=KEY).kernel
    plain = build_kernel(folder / "ensemble.yml", folder / "plain").kernel
    return keyed, plain


def _public_copy(source, folder, text: str):
    folder.mkdir()
    (folder / "kernel.py").write_text(text)
    metadata = json.loads((source.parent / "kernel-metadata.json").read_text())
    (folder / "kernel-metadata.json").write_text(json.dumps({**metadata, "is_private": False}))
    return folder


def test_a_keyed_kernel_without_its_marker_line_is_still_refused_public(world, tmp_path, built):
    keyed, plain = built
    text = keyed.read_text()
    assert KEY.hex() not in text  # the key lies only inside the compressed payload
    stripped = text.split("\n", 1)[1]
    for name, edited in [("no-marker", stripped),
                         ("blank-first", "\n" + stripped),
                         ("reformatted", stripped.replace("'", '"'))]:
        folder = _public_copy(keyed, tmp_path / name, edited)
        assert embeds_key(folder / "kernel.py")
        pushed = world.kernelpack("kernel", "push", str(folder))
        assert pushed.returncode == 1, pushed
        assert "embeds a decryption key" in pushed.stderr and "is_private: false" in pushed.stderr
        assert len(pushed.stderr.strip().splitlines()) == 1
    assert not world.stored("kernels").exists()           # nothing reached the service
    assert not embeds_key(plain)                           # no false alarm on a keyless build


def test_a_hand_written_key_literal_counts_and_a_damaged_payload_is_one_line(world, tmp_path,
                                                                           built):
    keyed, _ = built
    literal = _public_copy(keyed, tmp_path / "literal",
                           f"KEY = bytes.fromhex('{KEY.hex()}')\nprint(len(KEY))\n")
    refused = world.kernelpack("kernel", "push", str(literal))
    assert refused.returncode == 1 and "embeds a decryption key" in refused.stderr
    text = keyed.read_text().split("\n", 1)[1]
    start = text.index("_KP_PAYLOAD = (\n") + len("_KP_PAYLOAD = (\n")
    damaged = _public_copy(keyed, tmp_path / "damaged", text[:start] + "    'AAAA'\n" +
                           text[text.index("\n)", start):])
    refused = world.kernelpack("kernel", "push", str(damaged))
    assert refused.returncode == 1 and "payload cannot be read" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not world.stored("kernels").exists()
