#!/usr/bin/env python
"""``rarl-gym extract`` in a clone (extract (or finish extracting) the feature cache of dataset splits).

A thin wrapper: the command lives in :mod:`agents.cli.extract`, installed with the package;
``--help`` shows its options and examples. Imported (``import extract_features``), this module is
:mod:`agents.cli.extract` itself.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents.cli.extract as command

if __name__ == "__main__":
    sys.exit(command.main())
sys.modules[__name__] = command
