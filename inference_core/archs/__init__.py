"""The architecture families; importing this package registers them all."""

from . import pretrainedmodels_archs, small_cnn, torchvision_archs  # noqa: F401
