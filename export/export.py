#!/usr/bin/env python
"""Export a zoo model: ``python export/export.py --model cnn_mnist --base-dir exports``.

A thin entry point; the code is ``zoo.export`` (also installed as ``zoo-export``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
