import hashlib
import json
import os
import stat
import struct

import pytest
import torch
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from inference_core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from inference_core.errors import CheckpointError
from inference_core.kpenc import (
    MAGIC,
    MAX_HEADER_SIZE,
    TAG_SIZE,
    KpencError,
    KpencHeader,
    KpencManifest,
    decrypt_bytes,
    decrypt_to_memory,
    inspect,
    key_id,
    load_key,
    mappable_path,
)
from inference_core.model_factory import create_model
from kernelpack.cli import main
from kernelpack.weights.encrypt import encrypt_checkpoint, encrypt_file, keygen

KEY = bytes(range(32))
CHUNK = 4096


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, width=8)
    path = tmp_path_factory.mktemp("ckpt") / "cnn_f2.pt"
    save_checkpoint(path, "small_cnn", 10, {"name": "cnn_f2", "fold": 2, "input_size": 32,
                                            "mean": [0.5] * 3, "std": [0.25] * 3,
                                            "model_kwargs": {"width": 8}}, model)
    return path


@pytest.fixture
def sealed(checkpoint, tmp_path):
    path = tmp_path / "cnn_f2.kpenc"
    header = encrypt_checkpoint(checkpoint, KEY, path, chunk_size=CHUNK)
    assert header["chunks"] >= 3
    return path


def test_both_backends_decrypt_to_the_original_bytes(checkpoint, sealed):
    original = checkpoint.read_bytes()
    assert decrypt_bytes(sealed, KEY, backend="cryptography") == original
    assert decrypt_bytes(sealed, KEY, backend="pycryptodome") == original


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_every_plaintext_size_round_trips(tmp_path, size):
    plain = os.urandom(size)
    source = tmp_path / "plain.bin"
    source.write_bytes(plain)
    encrypt_file(source, KEY, tmp_path / "x.kpenc", KpencManifest(name="x"), chunk_size=CHUNK)
    for backend in ("cryptography", "pycryptodome"):
        assert decrypt_bytes(tmp_path / "x.kpenc", KEY, backend=backend) == plain


def test_layout_follows_the_written_spec(checkpoint, sealed):
    data = sealed.read_bytes()
    assert data[:8] == MAGIC == b"\x89KPENC\r\n"
    version, length = struct.unpack("<HI", data[8:14])
    assert version == 1
    header = json.loads(data[14:14 + length])
    assert sorted(header) == ["chunk_size", "chunks", "key_id", "manifest", "nonce_prefix",
                              "plaintext_size"]
    assert header["key_id"] == hashlib.sha256(b"kernelpack-key-id" + KEY).hexdigest()[:16]
    plain = checkpoint.read_bytes()
    assert header["manifest"]["sha256"] == hashlib.sha256(plain).hexdigest()
    assert header["manifest"]["name"] == "cnn_f2" and header["manifest"]["fold"] == 2
    assert len(data) == 14 + length + len(plain) + header["chunks"] * TAG_SIZE
    # Open the last chunk by hand, from the spec alone.
    aad = hashlib.sha256(data[:14 + length]).digest()
    last = header["chunks"] - 1
    start = 14 + length + last * (CHUNK + TAG_SIZE)
    nonce = bytes.fromhex(header["nonce_prefix"]) + struct.pack(">I", last) + b"\x01"
    assert AESGCM(KEY).decrypt(nonce, data[start:], aad) == plain[last * CHUNK:]


def test_nonce_prefix_is_fresh_for_every_file(checkpoint, tmp_path):
    a = encrypt_checkpoint(checkpoint, KEY, tmp_path / "a.kpenc")
    b = encrypt_checkpoint(checkpoint, KEY, tmp_path / "b.kpenc")
    assert a["nonce_prefix"] != b["nonce_prefix"]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_wrong_key_fails_at_once_by_key_id(sealed):
    other = bytes(32)
    with pytest.raises(KpencError) as info:
        decrypt_bytes(sealed, other)
    message = _one_line(info)
    assert str(sealed) in message
    assert f"key id {key_id(KEY)} does not match the key in use ({key_id(other)})" in message
    assert KEY.hex() not in message and other.hex() not in message


@pytest.mark.parametrize("chunk", [0, 1, -1])
@pytest.mark.parametrize("backend", ["cryptography", "pycryptodome"])
def test_a_flipped_byte_in_any_chunk_fails_authentication(sealed, chunk, backend):
    header = inspect(sealed)
    index = chunk % header.chunks
    data = bytearray(sealed.read_bytes())
    data[header.data_offset + index * (CHUNK + TAG_SIZE) + 7] ^= 0x01
    sealed.write_bytes(bytes(data))
    with pytest.raises(KpencError) as info:
        decrypt_bytes(sealed, KEY, backend=backend)
    assert f"chunk {index} of {header.chunks} fails authentication" in _one_line(info)


def test_an_edited_manifest_fails_authentication(sealed):
    data = sealed.read_bytes().replace(b'"fold":2', b'"fold":3')
    sealed.write_bytes(data)
    assert inspect(sealed).manifest.fold == 3
    with pytest.raises(KpencError, match=r"chunk 0 of \d+ fails authentication"):
        decrypt_bytes(sealed, KEY)


def test_swapped_chunks_fail(sealed):
    header = inspect(sealed)
    data = bytearray(sealed.read_bytes())
    size = CHUNK + TAG_SIZE
    first = header.data_offset
    chunk0, chunk1 = data[first:first + size], data[first + size:first + 2 * size]
    data[first:first + 2 * size] = chunk1 + chunk0
    sealed.write_bytes(bytes(data))
    with pytest.raises(KpencError, match=r"chunk 0 of \d+ fails authentication"):
        decrypt_bytes(sealed, KEY)


def test_truncation_at_a_chunk_boundary_is_caught(sealed):
    header = inspect(sealed)
    data = sealed.read_bytes()
    sealed.write_bytes(data[:header.data_offset + CHUNK + TAG_SIZE])
    with pytest.raises(KpencError) as info:
        decrypt_bytes(sealed, KEY)
    assert "truncated or padded" in _one_line(info)


def test_a_file_that_is_not_kpenc(checkpoint, tmp_path):
    with pytest.raises(KpencError) as info:
        decrypt_bytes(checkpoint, KEY)
    assert f"{checkpoint}: not a .kpenc file (bad magic)" in _one_line(info)
    with pytest.raises(KpencError, match=r"not a \.kpenc file"):
        inspect(checkpoint)


def test_decrypt_to_memory_loads_with_mmap_and_predicts_the_same(checkpoint, sealed, tmp_path):
    before = set(os.listdir(tmp_path))
    with decrypt_to_memory(sealed, KEY) as plain:
        assert mappable_path(plain) is not None  # Linux: a memfd, mapped without a copy
        loaded = torch.load(mappable_path(plain), mmap=True, weights_only=True,
                            map_location="cpu")
    assert set(os.listdir(tmp_path)) == before  # nothing written beside the container
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = model_from_checkpoint(load_checkpoint(checkpoint))(x)
        assert torch.equal(model_from_checkpoint(loaded)(x), expected)


def test_a_checkpoint_that_needs_pickle_is_refused(tmp_path):
    pickled = tmp_path / "whole.pt"
    torch.save({"model": create_model("small_cnn", num_classes=2, width=4)}, pickled)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        encrypt_checkpoint(pickled, KEY, tmp_path / "whole.kpenc")
    assert not (tmp_path / "whole.kpenc").exists()


def test_keygen_writes_a_private_key_and_never_overwrites(tmp_path):
    path = keygen(tmp_path / "kp.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(load_key(path)) == 32
    with pytest.raises(Exception, match="already exists"):
        keygen(path)
    (tmp_path / "bad.key").write_text("zz")
    with pytest.raises(KpencError, match="not a key file"):
        load_key(tmp_path / "bad.key")


def test_cli_round_trip_and_one_line_errors(checkpoint, tmp_path, capsys):
    key = tmp_path / "kp.key"
    assert main(["keygen", "-o", str(key)]) == 0
    out = tmp_path / "m.kpenc"
    assert main(["encrypt", str(checkpoint), "--key", str(key), "-o", str(out),
                 "--name", "renamed", "--fold", "4"]) == 0
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert '"name": "renamed"' in shown and '"fold": 4' in shown
    assert load_key(key).hex() not in shown
    assert main(["decrypt", str(out), "--key", str(key), "-o", str(tmp_path / "back.pt")]) == 0
    assert (tmp_path / "back.pt").read_bytes() == checkpoint.read_bytes()

    other = tmp_path / "other.key"
    keygen(other)
    capsys.readouterr()
    assert main(["decrypt", str(out), "--key", str(other), "-o", str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match the key in use" in err
    assert not (tmp_path / "x.pt").exists()


def test_the_header_class_writes_what_it_reads(tmp_path):
    header = KpencHeader.create(KEY, 10_000, KpencManifest(name="m", fold=1), chunk_size=CHUNK,
                                path="m.kpenc")
    assert (header.chunks, header.chunk_length(2)) == (3, 10_000 - 2 * CHUNK)
    assert header.nonce(2)[-1:] == b"\x01" and header.nonce(1)[-1:] == b"\x00"
    path = tmp_path / "m.kpenc"
    path.write_bytes(header.preamble)
    with open(path, "rb") as handle:
        read = KpencHeader.read(handle, "m.kpenc")
    assert read == header and read.aad == header.aad and read.data_offset == len(header.preamble)
    assert json.loads(header.preamble[14:]) == header.fields()


def test_a_header_that_would_not_read_back_is_never_written(tmp_path):
    source = tmp_path / "plain.bin"
    source.write_bytes(b"x" * 100)
    with pytest.raises(KpencError, match=r"manifest fold '2' is not an integer"):
        encrypt_file(source, KEY, tmp_path / "x.kpenc", KpencManifest(name="x", fold="2"))
    with pytest.raises(KpencError, match=r"the manifest makes the header \d+ bytes"):
        encrypt_file(source, KEY, tmp_path / "x.kpenc", KpencManifest(name="x" * MAX_HEADER_SIZE))
    with pytest.raises(KpencError, match=r"chunk size must be a positive integer, got 0"):
        encrypt_file(source, KEY, tmp_path / "x.kpenc", KpencManifest(name="x"), chunk_size=0)
    assert not list(tmp_path.glob("x.kpenc*"))


def test_a_header_with_inconsistent_sizes_is_named_damaged(sealed):
    data = sealed.read_bytes().replace(b'"chunks":', b'"chunks":9', 1)
    length = struct.unpack("<I", data[10:14])[0] + 1
    sealed.write_bytes(data[:10] + struct.pack("<I", length) + data[14:])
    with pytest.raises(KpencError) as info:
        inspect(sealed)
    assert "header fields are inconsistent" in _one_line(info) and str(sealed) in str(info.value)


def test_the_manifest_is_typed_and_each_field_checked_when_a_header_is_read(tmp_path):
    source = tmp_path / "plain.bin"
    source.write_bytes(b"x" * 100)
    manifest = KpencManifest(name="m", fold=1, arch="small_cnn", num_classes=3,
                             mean=(0.5, 0.5, 0.5), sha256="ab" * 32)
    sealed = tmp_path / "m.kpenc"
    written = encrypt_file(source, KEY, sealed, manifest)
    assert inspect(sealed).manifest == manifest and inspect(sealed).manifest.mean == (0.5,) * 3
    assert written["manifest"] == {"arch": "small_cnn", "fold": 1, "input_size": None,
                                   "mean": [0.5, 0.5, 0.5], "name": "m", "num_classes": 3,
                                   "resize": None, "sha256": "ab" * 32, "std": None}
    for field, bad, problem in [("sha256", "AB" * 32, "is not 64 hex digits"),
                                ("num_classes", "3", "is not an integer"),
                                ("mean", [0.5, "x"], "is not a list of numbers"),
                                ("colour", "red", "is unknown")]:
        body = json.dumps({**written, "manifest": {**written["manifest"], field: bad}}).encode()
        sealed.write_bytes(MAGIC + struct.pack("<HI", 1, len(body)) + body)
        with pytest.raises(KpencError) as info:
            inspect(sealed)
        message = _one_line(info)
        assert message.startswith(f"{sealed}: header fields are inconsistent (manifest ")
        assert field in message and problem in message
