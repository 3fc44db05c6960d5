"""Small helpers shared by the zoo's command-line tools."""

from __future__ import annotations

import ast
import os
from typing import Any


def parse_value(text: str) -> Any:
    """``--set`` values: Python/JSON literals (``3``, ``1e-3``, ``[20, 70]``, ``true``), else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=[1,2]"]`` → ``{"a": 1, "b": [1, 2]}``; a malformed item raises ValueError."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def add_overrides_argument(parser) -> None:
    """``--set KEY=VALUE`` (repeatable), collected into ``args.overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config key (repeatable); zoo.get_spec(NAME).default_config "
        "lists the keys",
    )


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter out of the CLI's output (unless the user set it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
