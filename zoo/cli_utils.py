"""Small helpers shared by the zoo's command-line tools."""

from __future__ import annotations

import ast
import os
import sys
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


_onednn_set_by: str | None = None


def start_cli(prog: str) -> None:
    """What each zoo command does first, before TensorFlow is imported: quiet TensorFlow's C++
    start-up, Keras on TensorFlow, and oneDNN on unless the user chose a mode
    (:func:`zoo.runtime.prefer_onednn`; README "CPU modes"). The library never does the last."""
    global _onednn_set_by
    quiet_tensorflow()
    from zoo import runtime

    if runtime.prefer_onednn():
        _onednn_set_by = prog


def announce_runtime(prog: str) -> None:
    """One line on stderr at start-up: TensorFlow's version, its oneDNN mode and who chose it,
    how to override it, and the CPU."""
    from zoo import runtime

    info = runtime.describe()
    if _onednn_set_by == prog:
        why = f"{prog}'s default; {runtime.ONEDNN_VARIABLE}=0 turns it off"
    elif info["onednn_source"].startswith(runtime.ONEDNN_VARIABLE):
        why = f"set by {info['onednn_source']}"
    else:
        why = f"TensorFlow's default; {runtime.ONEDNN_VARIABLE}=0/1 chooses"
    print(
        f"{prog}: TensorFlow {info['tensorflow']}, oneDNN {info['onednn']} ({why}), "
        f"CPU {info['cpu']}",
        file=sys.stderr,
    )
