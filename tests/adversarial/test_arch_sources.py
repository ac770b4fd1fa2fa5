"""Checkpoints are data: whatever a checkpoint's arch names, only the registry, timm and the
user's own code (imported as --code) may be built. Anything else importable is refused in one
line before it is imported, let alone called with the checkpoint's own model_kwargs."""

from __future__ import annotations

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_core.errors import UnknownArchError
from inference_core.model_factory import build_arch

# Importable modules a hostile checkpoint could name, a few never imported by this test run
# (`this` prints, `pty`, `code` and `turtle` are never loaded by kernelpack), and one absent.
MODULES = ["os", "subprocess", "logging", "torch.hub", "shutil", "builtins", "importlib",
           "pathlib", "pickle", "runpy", "this", "pty", "code", "turtle", "kp_never_there"]
ATTRIBUTES = ["system", "load", "basicConfig", "rmtree", "exec", "import_module", "Path",
              "loads", "run_path", "spawn", "interact", "Screen", "os.system"]
KWARGS = st.dictionaries(st.sampled_from(["source", "repo_or_dir", "filename", "filemode",
                                          "path", "command", "arch", "num_classes"]),
                         st.sampled_from(["local", "/tmp", "w", "x", 1, None]), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MODULES), st.sampled_from(ATTRIBUTES),
       st.sampled_from(["", "prototype:"]), KWARGS)
def test_no_arch_outside_the_users_code_is_imported_or_called(module, attribute, prefix,
                                                              model_kwargs):
    before = set(sys.modules)
    extra = {"embedding_dim": 2} if prefix else {}
    with pytest.raises(UnknownArchError) as info:  # as the kernel builds a checkpoint's arch
        build_arch(f"{prefix}{module}:{attribute}", 2, {**model_kwargs, **extra})
    message = str(info.value)
    assert "\n" not in message and f"{module}:{attribute}" in message
    assert "not code you passed with --code" in message or "not found; add --code" in message
    assert module not in set(sys.modules) - before  # refused before any import
