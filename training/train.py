#!/usr/bin/env python
"""Train a zoo model: ``python training/train.py --model cnn_mnist --dataset digits``.

A thin entry point; the trainer is ``zoo.training`` (also installed as ``zoo-train``).
"""

import sys
from pathlib import Path

# Let the script run from a checkout that was not pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
