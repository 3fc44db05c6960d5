#!/usr/bin/env python
"""Call a TF Serving-compatible gRPC server: Predict from .npy/.npz files, metadata, status.

    python serving/client.py --target 127.0.0.1:8500 --model cnn_mnist --input images=x.npy \
        --output out.npz
    python serving/client.py --target 127.0.0.1:8500 --model cnn_mnist --metadata --status

A thin CLI over ``zoo.serving.client`` (the official ``tensorflow-serving-api`` stubs).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.serving.client import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
