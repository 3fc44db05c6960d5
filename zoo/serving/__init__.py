"""A TF Serving-compatible model server for the zoo's SavedModel exports.

- ``zoo.serving.server``: ``zoo-serve`` / ``serving/server.py``, tensorflow_model_server's flags;
- ``zoo.serving.core``: loaded versions, the version manager (policies, polling, warm-up,
  draining unloads) and request batching;
- ``zoo.serving.grpc_service``: PredictionService and ModelService on the official stubs;
- ``zoo.serving.rest``: TF Serving's REST API, on aiohttp on the same asyncio loop;
- ``zoo.serving.json_tensor``: TF Serving's JSON <-> tensor codec (``json_tensor.cc``);
- ``zoo.serving.client``: ``predict`` / ``metadata`` / ``status`` on the official stubs.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from zoo.serving.server import main as server_main

    return server_main(argv)
