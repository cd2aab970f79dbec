"""``python -m dustgp.cli``: the ``dustgp`` command."""

import sys

from .entry import main

sys.exit(main())
