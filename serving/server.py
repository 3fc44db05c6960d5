#!/usr/bin/env python
"""Serve zoo exports over TF Serving's gRPC/REST protocol (``zoo.serving``, also ``zoo-serve``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.serving import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
