"""Start a zoo model server in a subprocess on free loopback ports (for tests and benchmarks).

>>> with ServerProcess("--model_name", "cnn_mnist", "--model_base_path", "exports/cnn_mnist") as s:
...     zoo.serving.client.predict(s.target, "cnn_mnist", {"images": x})
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["ServerProcess"]


class ServerProcess:
    """``serving/server.py`` on free loopback ports; ``stop()`` sends SIGTERM and returns the code."""

    def __init__(self, *args: str, rest: bool = True):
        # --rest_api_port 0 turns REST off (TF Serving's meaning), so REST needs a chosen port.
        rest_port = str(_free_port()) if rest else "0"
        cmd = [sys.executable, "-m", "zoo.serving.server", "--port", "0",
               "--rest_api_port", rest_port, *args]  # fmt: skip
        path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.grpc_port = self.rest_port = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.grpc_port and (not rest or self.rest_port):
                break
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "\n".join(self.lines[-40:]))
            time.sleep(0.05)
        else:
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + "\n".join(self.lines[-40:]))
        self.target = f"127.0.0.1:{self.grpc_port}"

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            m = re.search(r"ModelServer at [\d.]+:(\d+)", line)
            if m:
                self.grpc_port = int(m.group(1))
            m = re.search(r"REST API at:[\d.]+:(\d+)", line)
            if m:
                self.rest_port = int(m.group(1))

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        return self.proc.returncode

    def log(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
