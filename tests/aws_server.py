"""Local stand-ins for AWS, all on 127.0.0.1: a moto server, a byte-counting proxy and a
scripted Bedrock Converse endpoint. Test modules import the fixtures they use::

    from aws_server import aws_env, moto_server  # noqa: F401  (pytest fixtures)

One moto server serves the whole session, whichever modules use it; each test makes its
own buckets and Batch resources, so tests do not depend on each other.
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest
import requests

REGION = "us-east-1"


class MotoServer:
    """moto in server mode on a free loopback port."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        assert host == "127.0.0.1"
        self.endpoint = f"http://127.0.0.1:{port}"
        # Batch jobs are marked done instead of run in Docker (moto's batch_simple).
        self._api("config", json.dumps({"batch": {"use_docker": False}}))

    def _api(self, name: str, data: str) -> dict:
        r = requests.post(f"{self.endpoint}/moto-api/{name}", data=data.encode(), timeout=10)
        r.raise_for_status()
        return r.json() if r.content else {}

    def enforce_iam(self, on: bool) -> None:
        """Check every request's signature and IAM policies (moto skips both by default)."""
        self._api("reset-auth", "0" if on else "inf")

    def stop(self) -> None:
        self._server.stop()


_SERVER: MotoServer | None = None
_SERVER_LOCK = threading.Lock()


@pytest.fixture(scope="session")
def moto_server() -> MotoServer:
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None:
            _SERVER = MotoServer()
            atexit.register(_SERVER.stop)
    return _SERVER


@pytest.fixture
def aws_env(moto_server, monkeypatch, tmp_path):
    """Point every AWS client of this process and its children at the moto server, with
    test credentials and no shared AWS config that could reach a real account."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3",
                 "AWS_ENDPOINT_URL_BATCH", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_REGION",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "TELEMETRY_LAB_PARAMS",
                 "AWS_BATCH_JOB_ID", "AWS_BATCH_JOB_ARRAY_INDEX", "TELEMETRY_LAB_RESULTS",
                 "TELEMETRY_LAB_JOB_QUEUE", "TELEMETRY_LAB_JOB_DEFINITION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return moto_server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def boto(service: str):
    import boto3

    return boto3.client(service, region_name=REGION)


# -- a proxy that counts what crosses the wire ------------------------------------------------

class CountingProxy:
    """A TCP proxy in front of ``upstream`` (``http://127.0.0.1:PORT``) that counts the
    bytes sent to the client and records each request's method, path and Range header.

    Only meant for traffic without request bodies (reads), whose requests it parses.
    """

    _REQUEST_RE = re.compile(rb"(GET|HEAD) (\S+) HTTP/1\.[01]\r\n(.*?)\r\n\r\n", re.S)

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").split(":")
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.bytes_to_client = 0
        self._sent = bytearray()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, from_client):
        try:
            while data := src.recv(65536):
                with self._lock:
                    if from_client:
                        self._sent += data
                    else:
                        self.bytes_to_client += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def requests(self) -> list[tuple[str, str, str | None]]:
        """``(method, path, range header or None)`` of every request so far."""
        with self._lock:
            sent = bytes(self._sent)
        out = []
        for method, path, headers in self._REQUEST_RE.findall(sent):
            rng = re.search(rb"^range: *(.+)$", headers, re.I | re.M)
            out.append((method.decode(), unquote(path.decode()),
                        rng.group(1).decode().strip() if rng else None))
        return out

    def close(self):
        self._closed = True
        self._listener.close()


# -- a scripted Bedrock Converse endpoint -----------------------------------------------------

def converse_answer(report: dict | str | None = None, *, stop: str = "tool_use", text: str | None = None,
                    tool_name: str = "record_incident_report") -> dict:
    """A Converse response body: a tool call with ``report`` as its input, or a text answer."""
    content = []
    if text is not None:
        content.append({"text": text})
    if report is not None:
        content.append({"toolUse": {"toolUseId": "tooluse_1", "name": tool_name, "input": report}})
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
            "usage": {"inputTokens": 900, "outputTokens": 250, "totalTokens": 1150},
            "metrics": {"latencyMs": 800}}


class FakeConverse:
    """An HTTP server answering ``POST /model/{modelId}/converse`` from a script.

    ``script`` items are ``(status, body dict, error type or None)``; when the script is
    empty every request gets ``default``. Records each request's model id and JSON body and
    the most calls ever in flight at once.
    """

    def __init__(self, default: tuple | None = None, delay: float = 0.0):
        self.script: list[tuple] = []
        self.default = default
        self.delay = delay
        self.calls: list[tuple[str, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                m = re.fullmatch(r"/model/(.+)/converse", self.path)
                with lock:
                    fake.calls.append((unquote(m.group(1)) if m else self.path, body))
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    status, payload, error = fake.script.pop(0) if fake.script else fake.default
                try:
                    time.sleep(fake.delay)
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    if error:
                        self.send_header("x-amzn-ErrorType", error)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with lock:
                        fake.in_flight -= 1

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()
