"""A REST API standing in for the recipes' orders, inventory, customers and marketplace APIs, in
the test process on a free port: every request is recorded exactly as it arrived (method, raw
percent-encoded path, query string, headers, body) and echoed back as JSON, as httpbin's
/anything does, with a few resources of its own:

  .../orders, .../inventory, .../customers, .../users  JSON collections
  .../status/<code>    answers that status
  .../slow             answers after 30 s (a timeout test never waits that long)
  .../text             text/plain
  .../big              a body of 2 MiB
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from starlette.requests import Request

from .threaded_server import ThreadedServer

DATA = {
    "orders": [{"id": "o-1", "status": "pending"}, {"id": "o-2", "status": "shipped"}],
    "inventory": [{"sku": "sku-1", "stock": 3}, {"sku": "sku-2", "stock": 40}],
    "customers": [{"id": "c-1", "email": "ana@example.com"}],
    "users": [{"id": "a1b2c3d4", "name": "Alice Johnson"}, {"id": "e5f6g7h8", "name": "Bob Smith"}],
}


class RestUpstream:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        async def app(scope, receive, send) -> None:  # a plain function: uvicorn takes it for ASGI 3
            await self.app(scope, receive, send)

        self.server = ThreadedServer(app)

    def start(self) -> "RestUpstream":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.base_url

    def reset(self) -> None:
        self.received.clear()

    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = await Request(scope, receive).body()
        raw_path = scope.get("raw_path") or scope["path"].encode()
        record = {
            "method": scope["method"],
            "path": raw_path.decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            "body": body.decode("utf-8", errors="replace"),
        }
        self.received.append(record)
        status, ctype, payload = await self._answer(record)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, record: dict[str, Any]) -> tuple[int, str, bytes]:
        path = record["path"]
        if m := re.search(r"/status/(\d{3})$", path):
            return int(m.group(1)), "application/json", json.dumps({"error": "as asked"}).encode()
        if path.endswith("/slow"):
            await asyncio.sleep(30)
        if path.endswith("/text"):
            return 200, "text/plain; charset=utf-8", b"plain words"
        if path.endswith("/big"):
            return 200, "application/octet-stream", b"x" * (2 * 1024 * 1024)
        echo: dict[str, Any] = {"method": record["method"], "path": path, "query": record["query"],
                                "headers": dict(record["headers"]), "body": record["body"]}
        for name, items in DATA.items():
            if re.search(rf"/{name}/?$", path):
                echo["data"] = items
        return 200, "application/json", json.dumps(echo).encode()

    def header(self, record: dict[str, Any], name: str) -> list[str]:
        return [v for k, v in record["headers"] if k.lower() == name.lower()]


@pytest.fixture(scope="module")
def rest():
    """A RestUpstream for the module's tests (import the fixture into the test module)."""
    server = RestUpstream().start()
    yield server
    server.stop()


def tool(name: str, path: str, **more: Any) -> dict[str, Any]:
    """A REST tool definition named and described `name`, on `path`."""
    return {"name": name, "description": name, "path": path, **more}
