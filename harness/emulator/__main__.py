"""``python -m harness.emulator``: one endpoint process, controlled over QMP.

    python -m harness.emulator --release R --machine M [--ram SIZE]
        --qmp unix:PATH|tcp:HOST:PORT
        [--incoming tcp:HOST:PORT|unix:PATH|exec:CMD|file:PATH|defer] [-S]

See :mod:`harness.emulator.endpoint` for the protocol and the states.
"""

from __future__ import annotations

import sys

from .endpoint.server import main

if __name__ == "__main__":
    sys.exit(main())
