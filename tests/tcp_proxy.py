"""A loopback TCP proxy that can break the network on demand: reset every connection, or black-hole traffic."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:upstream_port``, byte for byte, until told otherwise.

    - :meth:`reset` closes every open connection with a TCP RST, as a flaky network or a NAT would;
    - :meth:`black_hole` keeps accepting connections but forwards nothing, until :meth:`restore`,
      which resets every connection opened meanwhile (their streams lost bytes).
    """

    def __init__(self, upstream_port: int, port: int = 0):
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._dropping = threading.Event()
        self._closed = threading.Event()
        self.resets = 0
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self._dropping.is_set():
                    target.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(source, target)

    def _forget(self, *sockets: socket.socket, rst: bool = False) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                if rst:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            with self._lock:
                self._sockets.discard(sock)

    def reset(self) -> int:
        """RST every open connection; returns how many sockets were cut."""
        with self._lock:
            sockets = list(self._sockets)
        self._forget(*sockets, rst=True)
        self.resets += 1
        return len(sockets)

    def black_hole(self) -> None:
        self._dropping.set()

    def restore(self) -> None:
        self._dropping.clear()
        self.reset()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self.reset()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
