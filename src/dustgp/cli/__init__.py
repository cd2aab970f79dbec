"""The ``dustgp`` command: ``simulate``, ``fit``, ``predict``, ``plot``, ``info``, ``fetch``, ``view``, ``query`` and
``demo``.

:mod:`~dustgp.cli.parser` holds the options, :mod:`~dustgp.cli.commands` what each command does, and
:mod:`~dustgp.cli.entry` the entry point with its exit statuses (0 done, 2 a problem with what was given, 1 a failed
computation, 130 Ctrl-C, 143 SIGTERM). ``python -m dustgp.cli`` runs it too.
"""

from .entry import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
