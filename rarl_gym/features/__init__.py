"""Feature extraction: CNN backbones (images -> feature maps).

The package's names are those of :mod:`rarl_gym.features.backbones` (its ``__all__``).
"""

from rarl_gym.features.backbones import *  # noqa: F403  (the names listed in its __all__)
from rarl_gym.features.backbones import __all__ as __all__
