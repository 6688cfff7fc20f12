"""Running the app with uvicorn: in the foreground (``segedge serve``) or in a background thread.

The listening socket is bound here, before uvicorn starts, so that a port in use or a host that
is not this machine's is one clear error, and ``port=0`` (any free port) tells the port it got.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from dataclasses import dataclass

from segedge.errors import SegedgeError


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; raises :class:`SegedgeError` saying why not."""
    if not 0 <= port <= 65535:
        raise SegedgeError(f"--port must be from 0 to 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SegedgeError(f"cannot listen on host {host!r}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = (
            "the port is in use; choose another with --port"
            if exc.errno in (98, 48, 10048)
            else (exc.strerror or str(exc))
        )
        raise SegedgeError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _server(app, access_log: bool):
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        lifespan="on",  # the app's shutdown stops tracking jobs and deletes uploaded clips
        timeout_keep_alive=30,
        limit_concurrency=256,
    )
    return uvicorn.Server(config)


def serve_forever(app, sock: socket.socket, announce=print, access_log: bool = False) -> None:
    """Serve ``app`` on the bound ``sock`` until Ctrl-C or SIGTERM (uvicorn's graceful shutdown);
    calls ``announce(url)`` once the server accepts connections."""
    server = _server(app, access_log)
    asyncio.run(_serve(server, sock, lambda started: started and announce(url_of(sock))))


async def _serve(server, sock: socket.socket, on_started) -> None:
    """Run ``server`` on ``sock``; call ``on_started(started)`` once it accepts connections (True) or has
    stopped without starting (False)."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    on_started(server.started)
    await task


@dataclass
class RunningServer:
    """A server on a background thread (:func:`start_in_thread`); ``stop()`` shuts it down."""

    url: str
    thread: threading.Thread
    server: object

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> RunningServer:
    """Start serving ``app`` on a daemon thread and return once it accepts connections (tests,
    benchmarks, notebooks)."""
    sock = bind(host, port)
    server = _server(app, access_log=False)
    server.install_signal_handlers = lambda: None  # not the main thread: signals stay with the caller (uvicorn < 0.29)
    ready = threading.Event()

    thread = threading.Thread(
        target=lambda: asyncio.run(_serve(server, sock, lambda _: ready.set())), name="segedge-serve", daemon=True
    )
    thread.start()
    if not ready.wait(timeout) or not server.started:
        server.should_exit = True
        raise SegedgeError("the server did not start")
    return RunningServer(url_of(sock), thread, server)
