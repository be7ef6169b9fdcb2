"""Run an ASGI app with uvicorn for the probe test servers (SDK-agnostic).

- binds 127.0.0.1:PORT or a unix socket (uds=PATH),
- prints `READY` on stdout (flushed) once the listening socket accepts,
- SIGTERM/SIGINT: graceful shutdown (open SSE streams are cut after
  `graceful` seconds), then exit status 0 (uvicorn would otherwise re-raise
  the signal after shutdown, i.e. die with 128+15).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

import anyio
import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        def handler(sig: int, frame: Any) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        sigs = (signal.SIGINT, signal.SIGTERM)
        old = {s: signal.signal(s, handler) for s in sigs}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            print("READY", flush=True)


def serve(app: Any, *, port: int | None = None, uds: str | None = None, graceful: float = 1.0,
          log_level: str = "warning", host: str = "127.0.0.1") -> int:
    if uds is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(uds)
        config = uvicorn.Config(app, uds=uds, log_level=log_level, timeout_graceful_shutdown=graceful,
                                lifespan="on")
    else:
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                timeout_graceful_shutdown=graceful, lifespan="on")
    server = _Server(config)
    anyio.run(server.serve)
    if uds is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(uds)
    print("[server] stopped", file=sys.stderr, flush=True)
    return 0


def loopback_security(security_cls: Any) -> Any:
    """DNS-rebinding protection that also accepts Host without a port (unix socket URLs)."""
    return security_cls(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1", "localhost", "127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
