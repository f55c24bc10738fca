"""msframe: Multiscale Gradient Estimation and Full-Multiscale training of image-restoration CNNs."""

__version__ = "0.1.0"

from msframe.hookspecs import hookimpl  # noqa: E402  (the marker plugins decorate their hooks with)

__all__ = ["__version__", "hookimpl"]
