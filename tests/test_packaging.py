"""kernelpack installs into the environment a competitor already trains in: its metadata declares
ranges, never exact pins (read from setup.cfg here, and from a built wheel's METADATA); the exact
tested set lives in constraints.txt, CI's low-end set in .ci/low-end-constraints.txt, and both
agree with the ranges; parts not every user needs are extras, and a command that needs a missing
one stops with one line naming it."""

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from setuptools.config.setupcfg import read_configuration

from inference_core.kpenc import KpencManifest, decrypt_chunks
from kernelpack.cli import main
from kernelpack.errors import MissingExtraError
from kernelpack.extras import EXTRAS, require
from kernelpack.weights import encrypt
from kernelpack.weights.encrypt import encrypt_file, sealing_backend

CHECKOUT = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))
# Imported by the core itself, at some point of some command: never an extra.
CORE = {"torch", "torchvision", "numpy", "pandas", "pillow", "pyyaml", "tqdm", "scipy",
        "requests", "timm", "albumentations", "opencv-python-headless", "safetensors",
        "pycryptodome", "kaggle", "kagglesdk", "six"}


def _options():
    return read_configuration(str(CHECKOUT / "setup.cfg"))["options"]


def _requirements(lines):
    return [Requirement(line) for line in lines]


def _pins(path):
    """name -> version of each `name==version` line of a constraints file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            assert str(requirement.specifier).startswith("=="), line
            pins[requirement.name.lower()] = Version(str(requirement.specifier)[2:])
    return pins


def _declared():
    """Every requirement of setup.cfg, the extras' included (self-references left out)."""
    options = _options()
    lines = list(options["install_requires"])
    for extra in options["extras_require"].values():
        lines += [line for line in extra if not line.startswith("kernelpack")]
    return _requirements(lines)


def test_setup_cfg_declares_ranges_with_a_lower_bound_and_no_exact_pin():
    for requirement in _declared():
        operators = {spec.operator for spec in requirement.specifier}
        assert "==" not in operators and "===" not in operators and "~=" not in operators, \
            f"{requirement}: an exact pin; declare a range, pin in constraints.txt"
        assert ">=" in operators, f"{requirement}: no lower bound (docs/install.md gives each)"


def test_core_and_extras_split_as_documented():
    options = _options()
    core = {requirement.name.lower() for requirement in
            _requirements(options["install_requires"])}
    assert core == CORE
    extras = options["extras_require"]
    for extra, modules in EXTRAS.items():
        names = {Requirement(line).name for line in extras[extra]}
        assert names & core == set()       # an extra adds what the core does not install
        assert names == set(modules) or extra == "notebook"
    assert set(extras["all"]) == {f"kernelpack[{','.join(EXTRAS)}]"}
    assert "kernelpack[all]" in extras["dev"]        # the suite needs every extra


def test_the_tested_set_pins_every_requirement_inside_its_range():
    pins = _pins(CHECKOUT / "constraints.txt")
    for requirement in _declared():
        name = requirement.name.lower()
        assert name in pins, f"constraints.txt lacks {name}: `make setup` would float it"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt: {name}=={pins[name]} is outside setup.cfg's {requirement}"
    assert "kernelpack" not in pins


def test_the_low_end_set_is_the_low_end_of_each_range():
    """CI's low-end check installs what setup.cfg claims as its oldest: each pin inside its range
    and at its lower bound (torch>=2.4 -> 2.4.x)."""
    pins = _pins(CHECKOUT / ".ci" / "low-end-constraints.txt")
    declared = {requirement.name.lower(): requirement for requirement in _declared()}
    for name, version in pins.items():
        requirement = declared[name]
        assert requirement.specifier.contains(version, prereleases=True), (name, version)
        floor, = (Version(spec.version) for spec in requirement.specifier if spec.operator == ">=")
        assert version.release[:len(floor.release)] == floor.release, \
            f"{name}=={version} is not the low end of {requirement}"
    for name in ("torch", "torchvision", "albumentations", "timm", "kaggle", "kagglesdk",
                 "numpy"):
        assert name in pins


def test_make_setup_installs_the_tested_set_with_every_extra():
    makefile = (CHECKOUT / "Makefile").read_text()
    assert 'pip install -qq -c constraints.txt -e ".[dev]"' in makefile
    assert "constraints.txt" in makefile.split("$(VENV)/.installed:")[1].splitlines()[0]


@pytest.mark.slow
def test_the_built_wheel_declares_no_exact_pin(tmp_path):
    """What pip reads: the Requires-Dist lines of the wheel's METADATA."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    for package in ("kernelpack", "inference_core"):
        shutil.copytree(CHECKOUT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                    "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=180, cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("kernelpack-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        name, = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        fields = Parser().parsestr(archive.read(name).decode())
    requires = fields.get_all("Requires-Dist")
    # (an extra's marker reads `extra == "notebook"`: the version specifier is what pins)
    pinned = [line for line in requires
              if {spec.operator for spec in Requirement(line).specifier} & {"==", "===", "~="}]
    assert requires and not pinned
    core = {Requirement(line).name.lower() for line in requires if "extra ==" not in line}
    assert core == CORE
    assert set(fields.get_all("Provides-Extra")) == {*EXTRAS, "all", "dev"}
    torch, = (Requirement(line) for line in requires if Requirement(line).name == "torch")
    assert torch.specifier.contains("2.4.1") and torch.specifier.contains("2.14.1")
    assert not torch.specifier.contains("3.0")


# --- extras: one line naming what to install -------------------------------------------------

def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "nbclient", None)     # how Python marks a module absent
    with pytest.raises(MissingExtraError) as caught:
        require("notebook", "build --notebook")
    assert str(caught.value) == ("build --notebook needs nbclient, not installed; "
                                 "pip install 'kernelpack[notebook]'")
    require("cryptography", "anything")                    # installed here: no error


def test_build_notebook_without_jupyter_names_the_notebook_extra(ensemble_yml, tmp_path,
                                                                  monkeypatch, capsys):
    for module in ("nbformat", "nbclient"):
        monkeypatch.setitem(sys.modules, module, None)
    assert main(["build", str(ensemble_yml), "-o", str(tmp_path / "nb"), "--notebook"]) == 1
    assert capsys.readouterr().err == (
        "kernelpack: error: build --notebook needs nbformat, nbclient, not installed; "
        "pip install 'kernelpack[notebook]'\n")
    assert not (tmp_path / "nb" / "kernel.ipynb").exists()


def test_the_notebook_runner_itself_names_the_extra_where_jupyter_is_missing(tmp_path):
    from kernelpack import read_template

    runner = read_template("notebook_runner.py")
    done = subprocess.run([sys.executable, "-I", "-c",
                           "import sys; sys.modules['nbclient'] = None\n" + runner],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ("notebook not run: nbclient is not installed; "
                           "pip install 'kernelpack[notebook]'\n")


def _block_cryptography(monkeypatch):
    for name in [n for n in sys.modules if n == "cryptography" or n.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)


@pytest.mark.parametrize("sealing, opening", [("pycryptodome", "cryptography"),
                                              ("cryptography", "pycryptodome")])
def test_either_backend_seals_what_the_other_opens(tmp_path, sealing, opening):
    source = tmp_path / "plain.bin"
    source.write_bytes(os.urandom(3 * 1000 + 7))
    sealed = tmp_path / "x.kpenc"
    encrypt_file(source, KEY, sealed, KpencManifest(name="x"), chunk_size=1000, backend=sealing)
    plain = b"".join(chunk for _, chunk in decrypt_chunks(sealed, KEY, backend=opening))
    assert plain == source.read_bytes()


def test_without_cryptography_encrypt_uses_pycryptodome(tmp_path, monkeypatch, capsys):
    _block_cryptography(monkeypatch)
    assert sealing_backend() == "pycryptodome"
    source = tmp_path / "plain.bin"
    source.write_bytes(b"weights" * 1000)
    encrypt_file(source, KEY, tmp_path / "x.kpenc", KpencManifest(name="x"))
    plain = b"".join(chunk for _, chunk in decrypt_chunks(tmp_path / "x.kpenc", KEY,
                                                          backend="pycryptodome"))
    assert plain == source.read_bytes()
    assert "cryptography" not in {n.split(".")[0] for n, m in sys.modules.items() if m}


def test_without_any_aes_library_encrypt_says_what_to_install(tmp_path, monkeypatch):
    _block_cryptography(monkeypatch)
    for name in [n for n in sys.modules if n == "Crypto" or n.startswith("Crypto.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "Crypto", None)
    source = tmp_path / "plain.bin"
    source.write_bytes(b"w")
    with pytest.raises(MissingExtraError, match=r"^encryption needs pycryptodome or cryptography"
                       r", and neither is installed; pip install pycryptodome .*"
                       r"pip install 'kernelpack\[cryptography\]'$"):
        encrypt_file(source, KEY, tmp_path / "x.kpenc", KpencManifest(name="x"))
    assert not (tmp_path / "x.kpenc").exists()
    assert encrypt.BACKENDS == ("cryptography", "pycryptodome")


def test_a_cadene_arch_without_pretrainedmodels_is_one_line_naming_the_extra(monkeypatch):
    from inference_core.errors import UnknownArchError
    from inference_core.model_factory import create_model

    monkeypatch.setitem(sys.modules, "pretrainedmodels", None)  # what `import` finds uninstalled
    with pytest.raises(UnknownArchError, match=r"kernelpack\[pretrainedmodels\]") as caught:
        create_model("se_resnext50_32x4d", num_classes=3)
    assert "\n" not in str(caught.value)
