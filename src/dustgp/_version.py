"""The package version, read once from the installed metadata; every module takes it from here."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("dustgp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
