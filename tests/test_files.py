"""inference_core.files: a file's SHA-256, and writes that never leave half a file under the
final name."""

import hashlib
import os

import pytest

from inference_core.files import atomic_write, sha256_file


def test_sha256_file_matches_hashlib_on_the_bytes_across_read_blocks(tmp_path):
    data = os.urandom(3 * (1 << 18) + 17)        # several of hashlib's read blocks, and a tail
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(str(tmp_path / "empty")) == hashlib.sha256(b"").hexdigest()


def test_atomic_write_replaces_the_file_only_once_it_is_whole(tmp_path):
    target = tmp_path / "submission.csv"
    target.write_text("old\n")
    with atomic_write(target, "w", newline="") as handle:
        handle.write("id,label\n")
        assert target.read_text() == "old\n"            # nothing visible under the name yet
        handle.write("a,1\n")
    assert target.read_text() == "id,label\na,1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / "model.kpenc"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"), atomic_write(target) as handle:
        handle.write(b"new, half")
        raise OSError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.kpenc"]
    with pytest.raises(ValueError, match="for writing"), atomic_write(target, "rb"):
        pass
