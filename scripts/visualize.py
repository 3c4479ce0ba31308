#!/usr/bin/env python
"""``rarl-gym visualize`` in a clone (the paper's Figure 2: the regions a trained RARL agent looks at, iteration by iteration).

A thin wrapper: the command lives in :mod:`agents.cli.visualize`, installed with the package;
``--help`` shows its options and examples. Imported (``import visualize``), this module is
:mod:`agents.cli.visualize` itself.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents.cli.visualize as command

if __name__ == "__main__":
    sys.exit(command.main())
sys.modules[__name__] = command
