"""msframe: Multiscale Gradient Estimation and Full-Multiscale training of image-restoration CNNs."""

__version__ = "0.2.0"

from msframe.api import PLUGIN_API  # the plugin API version, see msframe/api.py and CHANGELOG.md
from msframe.hookspecs import hookimpl  # the marker plugins decorate their hooks with

__all__ = ["PLUGIN_API", "__version__", "hookimpl"]
