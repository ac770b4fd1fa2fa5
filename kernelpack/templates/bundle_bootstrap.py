# Runs as `python kernel.py` and as a pasted notebook cell, with the standard library only. The
# payload is gzip-compressed: a JSON line `[[path, size], ...]`, then the files' bytes in that
# order. It is unpacked into a private temporary directory (never the working directory, which
# Kaggle publishes as the kernel's output), the entry runs as `__main__` the way `python ENTRY.py`
# (or `python -m package.entry`) runs it, with real file names and line numbers in tracebacks,
# and the directory is removed when the entry ends; exceptions and exit codes pass through
# unchanged. A script entry stays in memory (a private kernel's entry holds its key), unless a
# module imports it back by name.
import atexit as _kp_atexit
import base64 as _kp_base64
import builtins as _kp_builtins
import gzip as _kp_gzip
import importlib.machinery as _kp_machinery
import importlib.util as _kp_importlib_util
import io as _kp_io
import json as _kp_json
import linecache as _kp_linecache
import os as _kp_os
import re as _kp_re
import shutil as _kp_shutil
import sys as _kp_sys
import tempfile as _kp_tempfile
import tokenize as _kp_tokenize
import traceback as _kp_traceback
import types as _kp_types
import warnings as _kp_warnings

# (the entry's path in the payload, its module name when it runs as a package's module else None,
#  whether a script entry is also written out because a module imports it by name)
_KP_ENTRY = ("main.py", None, False)  # kernelpack: fill
# Vendored third-party packages: the warnings Python raises compiling their source are not the
# user's to fix. Namespace packages (folders without __init__.py) of the bundle.
_KP_VENDORED = ()  # kernelpack: fill
_KP_NAMESPACES = ()  # kernelpack: fill
# Modules of the user's code the bundler left out, with why ({"imet.train": "imports apex ..."}):
# importing one says so, instead of a bare "No module named".
_KP_LEFT_OUT = {}  # kernelpack: fill
# The files, as base64 string literals (kernelpack/bundler/payload.py writes them).
_KP_PAYLOAD = ()  # kernelpack: fill


def _kp_payload_files(pieces):
    """Each (path, bytes) of a payload given as its base64 pieces. The one reader of the format:
    kernelpack itself reads kernels' payloads with it (kernelpack/bundler/payload.py)."""
    data = _kp_gzip.decompress(_kp_base64.b64decode("".join(pieces)))
    index, _, blob = data.partition(b"\n")
    offset = 0
    for relative, size in _kp_json.loads(index):
        yield relative, blob[offset:offset + size]
        offset += size


def _kp_unpack(pieces, entry, keep_entry):
    """A private folder holding the payload's files, and the entry's bytes (kept in memory;
    written only with `keep_entry`)."""
    root = _kp_tempfile.mkdtemp(prefix="kernelpack-")
    working = _kp_os.path.join(_kp_os.path.realpath(_kp_os.getcwd()), "")
    if _kp_os.path.realpath(root).startswith(working):
        _kp_os.rmdir(root)
        raise SystemExit(  # one line and exit code 1, not a traceback
            "kernelpack: the temporary directory is inside the working directory, which Kaggle "
            "publishes; unset TMPDIR or point it elsewhere (e.g. /tmp)")
    source = None
    for relative, content in _kp_payload_files(pieces):
        if relative == entry:
            source = content
            if not keep_entry:
                continue
        path = _kp_os.path.join(root, *relative.split("/"))
        _kp_os.makedirs(_kp_os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(content)
    return root, source


class _KpNamespaceFinder:
    """Finds the bundle's own namespace packages in the bundle first, as its regular packages
    are (its folder leads sys.path): a same-named package on the image must not shadow them.
    A module of the user's code that the bundler left out fails to import with the reason."""

    def __init__(self, root):
        self.root = root

    def find_spec(self, name, path=None, target=None):
        if name in _KP_LEFT_OUT:
            raise ModuleNotFoundError(
                f"No module named {name!r}: kernelpack left it out of the bundle "
                f"({_KP_LEFT_OUT[name]})", name=name)
        if path is None and name in _KP_NAMESPACES:
            return _kp_machinery.PathFinder.find_spec(name, [self.root])
        return None


def _kp_quiet_vendored(root):
    """Silence the warnings raised compiling vendored code (e.g. SyntaxWarning: "is" with a
    literal): Python files them under the source path, which names the vendored package."""
    if not _KP_VENDORED:
        return None
    names = "|".join(_kp_re.escape(name) for name in _KP_VENDORED)
    _kp_warnings.filterwarnings(
        "ignore", module=_kp_re.escape(_kp_os.path.join(root, "")) + f"(?:{names})(?:[./\\\\].*)?")
    return _kp_warnings.filters[0]


def _kp_exec_entry(root, path, module, source):
    """Run the entry as `__main__`: a script as `python ENTRY.py` runs it (compiled from memory,
    its source lines given to tracebacks), a package's module as `python -m` runs it;
    sys.argv[0] is the entry's own file name."""
    if module is None:
        filename = _kp_os.path.join(root, *path.split("/"))
        encoding = _kp_tokenize.detect_encoding(_kp_io.BytesIO(source).readline)[0]
        lines = source.decode(encoding, "replace").splitlines(True)
        _kp_linecache.cache[filename] = (len(source), None, lines, filename)
        spec, package = None, None
        code = compile(source, filename, "exec", dont_inherit=True)
    else:
        spec = _kp_importlib_util.find_spec(module)  # imports its packages first, as -m does
        filename, package = spec.origin, module.rpartition(".")[0]
        code = spec.loader.get_code(module)
    main = _kp_types.ModuleType("__main__")
    main.__dict__.update(__file__=filename, __cached__=None, __spec__=spec, __package__=package,
                         __loader__=spec.loader if spec else None, __builtins__=_kp_builtins)
    saved_main, saved_argv = _kp_sys.modules.get("__main__"), _kp_sys.argv[:1]
    _kp_sys.modules["__main__"] = main
    _kp_sys.argv[:1] = [path.rsplit("/", 1)[-1]]
    try:
        exec(code, main.__dict__)
    finally:
        _kp_sys.argv[:1] = saved_argv
        if saved_main is not None:
            _kp_sys.modules["__main__"] = saved_main


def _kp_places(module):
    """The file and, for a namespace package, the folders a loaded module comes from."""
    try:
        spec = getattr(module, "__spec__", None)
        folders = (spec.submodule_search_locations or ()) if spec is not None else ()
        return [getattr(module, "__file__", None) or "", *folders]
    except Exception:  # a module that fakes its attributes (torch._classes) is not ours
        return []


def _kp_forget(root, finder, quiet):
    if root in _kp_sys.path:
        _kp_sys.path.remove(root)
    if finder in _kp_sys.meta_path:
        _kp_sys.meta_path.remove(finder)
    if quiet in _kp_warnings.filters:
        _kp_warnings.filters.remove(quiet)
    # Forget the unpacked modules, so that running the cell again imports them afresh.
    inside = root + _kp_os.sep
    for name, module in list(_kp_sys.modules.items()):
        if any(str(place).startswith(inside) for place in _kp_places(module)):
            del _kp_sys.modules[name]


def _kp_run():
    path, module, on_disk = _KP_ENTRY
    root, source = _kp_unpack(_KP_PAYLOAD, path, on_disk or module is not None)
    finder = _KpNamespaceFinder(root)
    failed = False
    _kp_sys.path.insert(0, root)
    _kp_sys.meta_path.insert(0, finder)
    quiet = _kp_quiet_vendored(root)
    try:
        _kp_exec_entry(root, path, module, source)
    except SystemExit:
        raise
    except BaseException:
        failed = True
        raise
    finally:
        _kp_forget(root, finder, quiet)
        if failed:
            # The traceback is printed after this frame unwinds and reads its source lines from
            # these files: remove them when the interpreter exits instead. Python's default hook
            # reads lines from disk only; the traceback module also finds the in-memory entry's.
            _kp_atexit.register(_kp_shutil.rmtree, root, ignore_errors=True)
            if _kp_sys.excepthook is _kp_sys.__excepthook__:
                _kp_sys.excepthook = _kp_traceback.print_exception
        else:
            _kp_shutil.rmtree(root, ignore_errors=True)

# The bundle ends with the call `_kp_run()` (kernelpack/bundler/bundle.py's render): imported,
# this module only defines the bootstrap.

