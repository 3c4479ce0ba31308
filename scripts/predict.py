#!/usr/bin/env python
"""``rarl-gym predict`` in a clone (label your own images with a trained run).

A thin wrapper: the command lives in :mod:`agents.cli.predict`, installed with the package;
``--help`` shows its options and examples. Imported (``import predict``), this module is
:mod:`agents.cli.predict` itself.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents.cli.predict as command

if __name__ == "__main__":
    sys.exit(command.main())
sys.modules[__name__] = command
