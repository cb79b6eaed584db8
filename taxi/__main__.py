"""``python -m taxi``: the same command line as the installed ``taxi`` command (see ``taxi.cli``)."""

from __future__ import annotations

import sys

from taxi.cli import main

if __name__ == "__main__":
    sys.exit(main())
