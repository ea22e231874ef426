"""`python -m hil.sim`: the device twin as a process (see hil.sim.cli)."""

import sys

from hil.sim.cli import main

sys.exit(main())
