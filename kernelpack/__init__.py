"""kernelpack: bundle, encrypt, push and rehearse PyTorch ensembles for offline Kaggle kernels."""

__version__ = "0.1.0"


def read_template(name: str) -> str:
    """A template's text (see kernelpack/templates). The templates travel inside the package
    (the top-level templates/ of a checkout links to them) and are read as package resources, so
    an installed wheel finds them as a source checkout does."""
    from importlib import resources  # here: 20 ms that `kernelpack --help` need not pay

    return resources.files(__name__).joinpath("templates", name).read_text(encoding="utf-8")
