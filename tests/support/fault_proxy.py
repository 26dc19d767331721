"""A TCP proxy for chaos tests: between gateways and Redis, it adds latency, blackholes
(accepts, holds every byte, never answers), resets or closes connections on command.

It runs its own asyncio loop on a thread; the control methods are called from the test.
A blackhole holds data rather than dropping it, as a network partition shorter than TCP's
timeout does: what was sent arrives once the path is restored.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable


class FaultProxy:
    """127.0.0.1:<port> forwarding to target_host:target_port until told otherwise."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._latency = 0.0
        self._closing = False
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _shutdown(self) -> None:
        self._closing = True
        self._flowing.set()  # held connections wake up, see _closing and end
        self._drop_all(False)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=5)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk forwarded, both ways."""
        self._latency = seconds

    def blackhole(self) -> None:
        """Accept connections and read nothing more: every byte waits until restore()."""
        self._call(self._flowing.clear)

    def restore(self) -> None:
        """Forward again, without latency; held bytes go through."""
        self._latency = 0.0
        self._call(self._flowing.set)

    def reset(self) -> None:
        """Abort every open connection with a TCP reset (both sides)."""
        self._call(self._drop_all, True)

    def close(self) -> None:
        """Close every open connection cleanly (both sides)."""
        self._call(self._drop_all, False)

    def open_connections(self) -> int:
        return len(self._connections)

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        done = threading.Event()

        def run() -> None:
            fn(*args)
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(timeout=10)

    async def _listen(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        await self._flowing.wait()  # a blackhole connects nobody upstream
        if self._closing:
            client_w.close()
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        pair = (client_w, upstream_w)
        self._connections.add(pair)
        try:
            await asyncio.gather(self._pump(client_r, upstream_w), self._pump(upstream_r, client_w))
        finally:
            self._connections.discard(pair)
            for writer in pair:
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                delay = self._delay()
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def _delay(self) -> float:
        """Seconds to hold the next chunk before forwarding it (subclasses vary it)."""
        return self._latency

    def _drop_all(self, with_reset: bool) -> None:
        for pair in list(self._connections):
            for writer in pair:
                if with_reset:
                    sock = writer.get_extra_info("socket")
                    if sock is not None:  # linger 0: close() sends RST instead of FIN
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                writer.close()
        self._connections.clear()
