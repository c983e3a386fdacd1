"""``python -m tickmatch`` runs the ``tickmatch`` command line."""

import sys

from tickmatch.cli import main

sys.exit(main())
