"""TF Serving-compatible model server (gRPC PredictionService/ModelService and REST).

Not implemented yet: it is the serving issue's work. Until it lands, serve the exports that
``zoo-export`` writes with the real ``tensorflow/serving`` image, which loads ``BASE/NAME/N/``.
"""

from __future__ import annotations

import sys

NOT_YET = (
    "zoo-serve is not implemented yet (the serving issue). Exports written by zoo-export / "
    "zoo-train --export-dir use TF Serving's layout, so the tensorflow/serving image serves them "
    "today: docker run -p 8500:8500 -v $PWD/exports/NAME:/models/NAME -e MODEL_NAME=NAME "
    "tensorflow/serving"
)


def main(argv: list[str] | None = None) -> int:
    print(f"zoo-serve: {NOT_YET}", file=sys.stderr)
    return 2
