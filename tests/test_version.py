"""dustgp._version: one version, the installed distribution's, everywhere it is reported."""

from importlib.metadata import version

import dustgp
from dustgp._version import __version__


def test_the_version_is_the_installed_distributions() -> None:
    assert __version__ == version("dustgp") == dustgp.__version__
