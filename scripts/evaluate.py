#!/usr/bin/env python
"""``rarl-gym evaluate`` in a clone (evaluate a trained agent: print the metrics table and write them as JSON).

A thin wrapper: the command lives in :mod:`agents.cli.evaluate`, installed with the package;
``--help`` shows its options and examples. Imported (``import evaluate``), this module is
:mod:`agents.cli.evaluate` itself.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents.cli.evaluate as command

if __name__ == "__main__":
    sys.exit(command.main())
sys.modules[__name__] = command
