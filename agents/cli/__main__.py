"""``python -m agents.cli COMMAND ...``: the ``rarl-gym`` command (also ``torchrun -m agents.cli train ...``)."""

import sys

from agents.cli import main

sys.exit(main())
