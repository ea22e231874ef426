"""`python -m hil.sim`: the device twin as a process (see hil.cli.sim)."""

import sys

from hil.cli.sim import main

sys.exit(main())
