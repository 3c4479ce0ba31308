#!/usr/bin/env python
"""``rarl-gym train`` in a clone (train an agent on a rarl-gym env).

A thin wrapper: the command lives in :mod:`agents.cli.train`, installed with the package;
``--help`` shows its options and examples. Imported (``import train_agent``), this module is
:mod:`agents.cli.train` itself.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents.cli.train as command

if __name__ == "__main__":
    sys.exit(command.main())
sys.modules[__name__] = command
