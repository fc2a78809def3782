"""A scripted stand-in for a node, for answers a real node never gives: each request gets
raw HTTP bytes from a handler, sent in pieces with pauses (a node that trickles), or
nothing (a node that is not there). Listens on 127.0.0.1 on a free port, from a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

Chunks = list[tuple[bytes, float]]
"""What to send: pieces, each after its pause in seconds."""
Handler = Callable[[str, str, bytes], Chunks]
"""(method, path, body) -> the answer."""


def answer(status: int, body: bytes | str, extra: str = "") -> Chunks:
    """A whole HTTP/1.1 answer, sent at once."""
    data = body.encode() if isinstance(body, str) else body
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n{extra}\r\n"
    )
    return [(head.encode() + data, 0.0)]


def trickle(data: bytes, pause_s: float) -> Chunks:
    """`data` one byte at a time, each after `pause_s`."""
    return [(data[i : i + 1], pause_s) for i in range(len(data))]


class ScriptedNode:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, str, bytes]] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    got = conn.recv(65536)
                    if not got:
                        return
                    data += got
                head, body = data.split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append((method, path, body))
                for piece, pause_s in self.handler(method, path, body):
                    time.sleep(pause_s)
                    conn.sendall(piece)
            except OSError:
                pass

    def close(self) -> None:
        self._sock.close()
