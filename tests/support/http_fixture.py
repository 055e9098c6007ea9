"""A file served over HTTP on 127.0.0.1 that can fail or stall its first requests (a bad mirror)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@contextmanager
def serve_file(
    path: Path, failures: int = 0, status: int = 503, stalls: int = 0, stall_after: int = 1000
) -> Iterator[dict]:
    """Serve ``path`` at ``state['url']``; the first ``failures`` requests get HTTP ``status``.

    The next ``stalls`` requests get the headers and ``stall_after`` bytes, then nothing until the
    server shuts down (a mirror that stops sending). ``state['times']`` holds the monotonic time
    of every request.
    """
    state: dict = {"requests": 0, "failures": failures, "times": []}
    payload = Path(path).read_bytes()
    closing = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["requests"] += 1
            state["times"].append(time.monotonic())
            if state["requests"] <= state["failures"]:
                self.send_error(status, "flaky mirror")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if state["requests"] <= state["failures"] + stalls:
                self.wfile.write(payload[:stall_after])
                self.wfile.flush()
                closing.wait(timeout=60)  # bounded: a test that forgets to close still ends
                return
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/{Path(path).name}"
    try:
        yield state
    finally:
        closing.set()
        server.shutdown()
        server.server_close()
