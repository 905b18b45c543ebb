"""WebSockets from a real daphne, fed by real workers: live, resumable, authenticated, ending.

The venv has no WebSocket client library, so `Client` below speaks just enough RFC 6455 (text
frames, ping/pong, close) to be one; it is also what a script without dependencies could do.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from rest_framework.authtoken.models import Token

pytestmark = [pytest.mark.e2e]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA

SLOW = """
name: e2e-ws
steps:
  first: {type: shell, run: "for i in 1 2 3; do echo line-$i; sleep 0.2; done"}
  second: {type: shell, needs: [first], run: "echo done"}
"""


class Closed(Exception):
    """The server closed the socket; `code` is its close code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class Client:
    """A minimal blocking WebSocket client: JSON over text frames, answering pings."""

    def __init__(self, base: str, path: str, *, origin: str | None = None, timeout: float = 30):
        parts = urlsplit(base)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {origin or base}\r\n\r\n"
            ).encode()
        )
        status, *lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(status.split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
        if self.status == 101:
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            assert headers["sec-websocket-accept"] == accept

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed(1006)
        self.buffer += chunk

    def _exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _send(self, opcode: int, payload: bytes) -> None:
        # Client frames must be masked (RFC 6455, 5.3).
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _frame(self) -> tuple[int, bool, bytes]:
        first, second = self._exact(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._exact(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._exact(8))
        return first & 0x0F, bool(first & 0x80), self._exact(size)

    def send(self, message: dict[str, Any]) -> None:
        self._send(TEXT, json.dumps(message).encode())

    def receive(self) -> dict[str, Any]:
        """The next JSON message; raises Closed when the server closes the socket instead."""
        parts: list[bytes] = []
        while True:
            opcode, fin, payload = self._frame()
            if opcode == PING:
                self._send(PONG, payload)
            elif opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                with contextlib.suppress(OSError):
                    self._send(CLOSE, payload[:2])
                self.sock.close()
                raise Closed(code)
            elif opcode != PONG:
                parts.append(payload)
                if fin:
                    return json.loads(b"".join(parts))

    def until(self, kind: str) -> list[dict[str, Any]]:
        """Messages up to and including the first of type `kind`."""
        messages = [self.receive()]
        while messages[-1]["type"] != kind:
            messages.append(self.receive())
        return messages

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(CLOSE, struct.pack("!H", 1000))
        self.sock.close()


def closed_code(ws: Client) -> int:
    with pytest.raises(Closed) as closed:
        ws.receive()
    return closed.value.code


def start(client: httpx.Client) -> str:
    published = client.post(
        "/api/v1/workflows", content=SLOW, headers={"Content-Type": "application/yaml"}
    )
    assert published.status_code in (200, 201), published.text
    started = client.post("/api/v1/workflows/e2e-ws/runs", json={})
    assert started.status_code == 201, started.text
    return started.json()["id"]


def listed_events(client: httpx.Client, run_id: str) -> list[int]:
    return [e["id"] for e in client.get(f"/api/v1/runs/{run_id}/events").json()]


@pytest.fixture
def token(alice: Any) -> str:
    return Token.objects.get_or_create(user=alice)[0].key


def test_a_run_socket_carries_every_event_and_log_line_live_and_ends(
    furrow, client_for, alice, token
):
    client = client_for(alice)
    run_id = start(client)
    ws = Client(furrow, f"/ws/runs/{run_id}/?token={token}")
    ws.send({"type": "subscribe"})
    messages = ws.until("end")
    assert closed_code(ws) == 1000

    assert messages[0] == {"type": "subscribed", "after": {"events": 0, "logs": 0}}
    events = [m["event"] for m in messages if m["type"] == "event"]
    assert [e["id"] for e in events] == listed_events(client, run_id)
    assert events[-1]["type"] == "run.succeeded"
    lines = [m["line"]["text"] for m in messages if m["type"] == "log"]
    assert lines == ["line-1", "line-2", "line-3", "done"]
    assert messages[-1]["run"] == run_id


def test_a_run_socket_resumes_after_a_disconnect_with_nothing_lost_or_repeated(
    furrow, client_for, alice, token
):
    client = client_for(alice)
    run_id = start(client)
    first = Client(furrow, f"/ws/runs/{run_id}/")
    first.send({"type": "auth", "token": token})
    first.send({"type": "subscribe", "filters": {"logs": False}})
    before = [first.receive() for _ in range(4)]  # subscribed and three events, mid-run
    first.close()

    second = Client(furrow, f"/ws/runs/{run_id}/?token={token}")
    second.send(
        {"type": "subscribe", "after": before[-1]["event"]["id"], "filters": {"logs": False}}
    )
    after = second.until("end")
    assert closed_code(second) == 1000

    streamed = [m["event"]["id"] for m in before + after if m["type"] == "event"]
    assert streamed == listed_events(client, run_id)  # the union, in order, without duplicates
    assert after[-2]["event"]["type"] == "run.succeeded"


def test_the_events_socket_filters_live_events_by_workflow_and_type(
    furrow, client_for, alice, token
):
    client = client_for(alice)
    ws = Client(furrow, f"/ws/events/?token={token}")
    ws.send({"type": "subscribe", "filters": {"workflow": "e2e-ws", "types": ["run.*"]}})
    assert ws.receive() == {"type": "subscribed", "after": 0}
    run_id = start(client)
    got = [ws.receive()["event"]]
    while got[-1]["type"] != "run.succeeded":
        got.append(ws.receive()["event"])
    ws.close()
    assert [e["type"] for e in got] == ["run.queued", "run.running", "run.succeeded"]
    assert {e["run"] for e in got} == {run_id}


def test_a_socket_without_credentials_is_told_and_closed_with_4401(furrow):
    ws = Client(furrow, "/ws/events/")
    ws.send({"type": "subscribe"})
    assert ws.receive() == {"type": "error", "message": "authentication required"}
    assert closed_code(ws) == 4401


def test_a_handshake_from_another_origin_is_refused(furrow, token):
    ws = Client(furrow, f"/ws/events/?token={token}", origin="http://evil.example")
    assert ws.status == 403
    ws.close()
