"""`python -m gateway.cli`: the same as the `opsgate` command (tests and processes spawned without the script)."""

import sys

from gateway.cli import main

sys.exit(main())
