"""``python -m tensorfile``: the ``tensorfile`` command (:mod:`tensorfile.cli_fast`)."""

import sys

from .cli_fast import main

sys.exit(main())
