#!/usr/bin/env python
"""``rarl-gym ablate`` in a clone (the paper's ablations (Tables 3-6) on one env, as one command).

A thin wrapper: the command lives in :mod:`agents.cli.ablate`, installed with the package;
``--help`` shows its options and examples. Imported (``import ablate``), this module is
:mod:`agents.cli.ablate` itself.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents.cli.ablate as command

if __name__ == "__main__":
    sys.exit(command.main())
sys.modules[__name__] = command
