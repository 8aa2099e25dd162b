"""The exceptions cvdeploy raises, drawn once as a tree.

    CvdeployError                 a user can cause it and fix it; the CLI prints one line and exits 2
    ├── InputError                 a path, image or value the user gave is wrong
    │   ├── ImageError             an image that cannot be read or decoded
    │   │   └── ImageTooLarge      an image whose declared size is over the pixel limit it is read under
    │   └── ConfigError            a flag, YAML contract or configuration value is invalid
    ├── BundleError                a bundle directory or manifest is missing, malformed or tampered with
    ├── ModelError                 a model file cannot be loaded, recognised or converted
    │   └── PrecisionError         a runtime would execute another precision than the artifact states
    ├── MissingDependency          an optional extra is not installed (message names the pip command)
    └── ParityError                an exported artifact disagrees with its source beyond tolerance

Anything else that escapes is a bug in cvdeploy and is reported with a traceback.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConfigError",
    "CvdeployError",
    "ImageError",
    "ImageTooLarge",
    "InputError",
    "MissingDependency",
    "ModelError",
    "ParityError",
    "PrecisionError",
]


class CvdeployError(Exception):
    """An error the user can fix; its message says what was wrong and what to do."""


class InputError(CvdeployError):
    """A path, value or file given by the user is wrong."""


class ImageError(InputError):
    """An image file or buffer that cannot be decoded."""


class ImageTooLarge(ImageError):
    """An image whose header declares more pixels than the caller accepts (refused before decoding)."""


class ConfigError(InputError):
    """An invalid flag value, contract field or configuration file."""


class BundleError(CvdeployError):
    """A bundle that is missing, malformed, of an unknown schema or tampered with."""


class ModelError(CvdeployError):
    """A model file that cannot be loaded, recognised or converted."""


class PrecisionError(ModelError):
    """The engine would run an artifact at another precision than its name states (or cannot run it)."""


class MissingDependency(CvdeployError):
    """An optional dependency is not installed."""


class ParityError(CvdeployError):
    """An exported artifact disagrees with its source beyond the tolerance."""
