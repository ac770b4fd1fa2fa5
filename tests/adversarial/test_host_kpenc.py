"""Hostile .kpenc files and careless key handling: any bytes give a KpencError or a valid result
(never another exception, never a huge allocation); keys, encrypt and decrypt never leave a file
others can read, a named partial file, or a half-written output."""

from __future__ import annotations

import json
import os
import stat
import struct
import threading
import tracemalloc
from pathlib import Path

import pytest
import torch
from cli_run import assert_one_line_error, kernelpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_core.checkpoint import save_checkpoint
from inference_core.files import atomic_write
from inference_core.kpenc import (
    MAGIC,
    MAX_CHUNK_SIZE,
    VERSION,
    KpencError,
    KpencHeader,
    KpencManifest,
    decrypt_bytes,
    key_id,
)
from inference_core.model_factory import create_model
from kernelpack.weights.encrypt import encrypt_file

KEY = bytes(range(32))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _preamble(fields: dict | bytes) -> bytes:
    body = fields if isinstance(fields, bytes) else json.dumps(fields).encode()
    return MAGIC + struct.pack("<HI", VERSION, len(body)) + body


def _fields(**overrides) -> dict:
    return {"key_id": key_id(KEY), "nonce_prefix": "00" * 7, "chunk_size": 16, "chunks": 1,
            "plaintext_size": 10, "manifest": {"name": "m", "fold": 0}, **overrides}


def _read_or_kpenc_error(path: Path) -> None:
    """Reading `path` ends in plaintext or a one-line KpencError naming it; nothing else."""
    try:
        decrypt_bytes(path, KEY)
    except KpencError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


@pytest.fixture(scope="module")
def sealed_bytes(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("sealed")
    (folder / "plain.bin").write_bytes(os.urandom(100))
    encrypt_file(folder / "plain.bin", KEY, folder / "m.kpenc", KpencManifest(name="m", fold=0),
                 32)
    return (folder / "m.kpenc").read_bytes()


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_after_the_magic_read_as_a_header_or_a_kpenc_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "x.kpenc"
    path.write_bytes(MAGIC + data)
    _read_or_kpenc_error(path)


SIZES = st.one_of(st.integers(min_value=-3, max_value=64),
                  st.sampled_from([2 ** 31, 2 ** 40, 10 ** 12, 10 ** 30, 10 ** 4000]),
                  st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans())


@FUZZ
@given(chunk_size=SIZES, chunks=SIZES, plaintext_size=SIZES,
       manifest=st.one_of(st.none(), st.lists(st.integers(), max_size=2),
                          st.dictionaries(st.sampled_from(["name", "fold"]),
                                          st.one_of(st.integers(), st.text(max_size=3),
                                                    st.floats(allow_nan=True)))),
       tail=st.binary(max_size=120))
def test_any_header_fields_and_chunks_read_or_fail_as_kpenc_errors(tmp_path_factory, chunk_size,
                                                                  chunks, plaintext_size,
                                                                  manifest, tail):
    fields = _fields(chunk_size=chunk_size, chunks=chunks, plaintext_size=plaintext_size,
                     manifest=manifest)
    body = json.dumps(fields, allow_nan=True).encode()  # NaN written as a bare constant
    path = tmp_path_factory.mktemp("fuzz") / "x.kpenc"
    path.write_bytes(_preamble(body) + tail)
    _read_or_kpenc_error(path)


@FUZZ
@given(st.data())
def test_any_damage_to_a_real_file_is_caught(tmp_path_factory, sealed_bytes, data):
    damaged = bytearray(sealed_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(damaged) - 1))
        damaged[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    path = tmp_path_factory.mktemp("fuzz") / "x.kpenc"
    path.write_bytes(bytes(damaged[:cut] if data.draw(st.booleans()) else damaged))
    _read_or_kpenc_error(path)


def test_a_header_claiming_a_terabyte_chunk_is_refused_before_allocating(tmp_path):
    # Consistent with its file size (one chunk of 10 bytes), so only the claim itself is wrong.
    path = tmp_path / "huge.kpenc"
    preamble = _preamble(_fields(chunk_size=10 ** 12))
    path.write_bytes(preamble + b"x" * (10 + 16))
    tracemalloc.start()
    with pytest.raises(KpencError, match=f"above the {MAX_CHUNK_SIZE} bytes allowed"):
        decrypt_bytes(path, KEY)
    assert tracemalloc.get_traced_memory()[1] < 10 * 2 ** 20
    tracemalloc.stop()
    # The inspector names it too, in one line.
    assert_one_line_error(kernelpack("inspect", path), str(path), "chunk_size")


def test_a_header_with_nan_huge_digits_or_deep_nesting_is_one_kpenc_error(tmp_path):
    nan = tmp_path / "nan.kpenc"
    nan.write_bytes(_preamble(b'{"chunk_size": NaN}'))
    digits = tmp_path / "digits.kpenc"
    digits.write_bytes(_preamble(b'{"chunk_size": ' + b"9" * 5000 + b"}"))
    deep = tmp_path / "deep.kpenc"
    deep.write_bytes(_preamble(b"[" * 100_000 + b"]" * 100_000))
    for path in (nan, digits, deep):
        with open(path, "rb") as handle, pytest.raises(KpencError, match="header is damaged"):
            KpencHeader.read(handle, str(path))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    torch.manual_seed(0)
    save_checkpoint(path, "small_cnn", 4, {"name": "m", "fold": 0, "input_size": 16},
                    create_model("small_cnn", num_classes=4, width=4))
    return path


@pytest.fixture
def key_file(tmp_path) -> Path:
    done = kernelpack("keygen", "-o", tmp_path / "k.key")
    assert done.code == 0, done.err
    return tmp_path / "k.key"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_encrypt_and_decrypt_write_mode_0600(tmp_path, checkpoint, key_file):
    previous = os.umask(0o022)  # the usual umask: files would be 0644 without care
    try:
        sealed = kernelpack("encrypt", checkpoint, "--key", key_file, "-o", tmp_path / "m.kpenc")
    finally:
        os.umask(previous)
    assert sealed.code == 0, sealed.err
    assert _mode(key_file) == 0o600
    assert _mode(tmp_path / "m.kpenc") == 0o600
    done = kernelpack("decrypt", tmp_path / "m.kpenc", "--key", key_file, "-o", tmp_path / "m.pt")
    assert done.code == 0, done.err
    assert _mode(tmp_path / "m.pt") == 0o600
    assert (tmp_path / "m.pt").read_bytes() == checkpoint.read_bytes()


def test_decrypt_onto_a_folder_is_one_line_and_leaves_no_plaintext(tmp_path, checkpoint,
                                                                 key_file):
    kernelpack("encrypt", checkpoint, "--key", key_file, "-o", tmp_path / "m.kpenc")
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    done = kernelpack("decrypt", tmp_path / "m.kpenc", "--key", key_file, "-o", folder)
    assert_one_line_error(done, f"-o {folder}", "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


def test_a_tampered_last_chunk_leaves_no_output_and_no_partial_file(tmp_path, checkpoint,
                                                                  key_file):
    kernelpack("encrypt", checkpoint, "--key", key_file, "-o", tmp_path / "m.kpenc")
    data = bytearray((tmp_path / "m.kpenc").read_bytes())
    data[-1] ^= 1
    (tmp_path / "m.kpenc").write_bytes(bytes(data))
    done = kernelpack("decrypt", tmp_path / "m.kpenc", "--key", key_file, "-o", tmp_path / "out.pt")
    assert_one_line_error(done, "fails authentication")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "m.kpenc"]


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="nameless files are Linux's O_TMPFILE")
def test_no_named_partial_file_exists_while_a_private_file_is_written(tmp_path):
    target = tmp_path / "plain.pt"
    seen = []
    with atomic_write(target, private=True) as handle:
        handle.write(b"secret weights")
        seen = sorted(p.name for p in tmp_path.iterdir())
        # Another process could not open it by any name, nor read it through /proc.
        fd_path = Path(f"/proc/self/fd/{handle.fileno()}")
        assert stat.S_IMODE(fd_path.stat().st_mode) == 0o600
    assert seen == []
    assert target.read_bytes() == b"secret weights" and _mode(target) == 0o600


def test_concurrent_private_writes_of_one_name_end_with_one_whole_file(tmp_path):
    target = tmp_path / "out.bin"

    def write(byte: bytes) -> None:
        with atomic_write(target, private=True) as handle:
            handle.write(byte * 100_000)

    threads = [threading.Thread(target=write, args=(bytes([i]),)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    data = target.read_bytes()
    assert len(data) == 100_000 and len(set(data)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_key_file_others_can_read_is_refused_with_the_chmod_fix(tmp_path, checkpoint, key_file):
    for mode in (0o644, 0o640, 0o604):
        key_file.chmod(mode)
        done = kernelpack("encrypt", checkpoint, "--key", key_file, "-o", tmp_path / "m.kpenc")
        assert_one_line_error(done, str(key_file), f"mode {mode:o}", f"chmod 600 {key_file}")
        assert not (tmp_path / "m.kpenc").exists()
    key_file.chmod(0o400)
    done = kernelpack("encrypt", checkpoint, "--key", key_file, "-o", tmp_path / "m.kpenc")
    assert done.code == 0, done.err


def test_bad_paths_are_one_line_each_and_write_nothing(tmp_path, checkpoint, key_file):
    sealed = tmp_path / "m.kpenc"
    kernelpack("encrypt", checkpoint, "--key", key_file, "-o", sealed)
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (("encrypt", checkpoint, "--key", tmp_path, "-o", tmp_path / "x.kpenc"), ["is a folder"]),
        (("decrypt", sealed, "--key", tmp_path, "-o", tmp_path / "x.pt"), ["is a folder"]),
        (("keygen", "-o", tmp_path / "missing" / "k.key"), ["does not exist", "mkdir"]),
        (("encrypt", checkpoint, "--key", key_file, "-o", tmp_path / "missing" / "m.kpenc"),
         ["does not exist"]),
        (("decrypt", sealed, "--key", key_file, "-o", tmp_path / "missing" / "m.pt"),
         ["does not exist"]),
        (("inspect", tmp_path / "absent.kpenc"), ["absent.kpenc", "not found"]),
        (("decrypt", tmp_path / "absent.kpenc", "--key", key_file, "-o", tmp_path / "x.pt"),
         ["not found"]),
        (("inspect", tmp_path), ["is a folder"]),
        (("encrypt", tmp_path / "absent.pt", "--key", key_file, "-o", tmp_path / "x.kpenc"),
         ["absent.pt", "not found"]),
    ]
    for args, fragments in cases:
        assert_one_line_error(kernelpack(*args), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_negative_fold_flag_is_a_usage_error(tmp_path, checkpoint, key_file):
    done = kernelpack("encrypt", checkpoint, "--key", key_file, "-o", tmp_path / "m.kpenc",
                      "--fold", "-1")
    assert_one_line_error(done, "--fold", "at least 0", code=2)
    assert not (tmp_path / "m.kpenc").exists()
