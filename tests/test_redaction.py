"""An endpoint that echoes the request (headers included) into its error must not put the API key into
the catalogue, the caption report or the logs (D16)."""
from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import free_port

KEY = "sk-CANARY-7f3a9"


@pytest.fixture
def echo_server():
    """Answers every request with 401 and the request's headers in the body, as some proxies do."""
    class Echo(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"error": "unauthorized", "request_headers": dict(self.headers)}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("key", [KEY, "plain-custom-token-93xq"])
def test_an_echoed_api_key_never_reaches_the_catalogue(demo_ws, echo_server, monkeypatch, key):
    from core.pipeline.captioning import caption_selection, failure_rows
    from core.models.teachers.openai_compat import OpenAICompatTeacher, TeacherHTTPError
    monkeypatch.setenv("HEARSAY_OPENAI_API_KEY", key)
    settings = dataclasses.replace(demo_ws.settings, openai_base_url=echo_server, extra={"openai_max_retries": 0})
    monkeypatch.setattr(demo_ws, "settings", settings)
    teacher = OpenAICompatTeacher(demo_ws.settings, max_retries=0)
    with pytest.raises(TeacherHTTPError) as caught:
        teacher.caption_one(__import__("numpy").zeros(1600, dtype="float32"))
    assert key not in str(caught.value) and "401" in str(caught.value)
    report = caption_selection(demo_ws, "openai-compatible", selection=demo_ws.catalog.clip_ids()[:2])
    assert report.failed == 2
    stored = json.dumps(failure_rows(demo_ws, 10)) + json.dumps(report.failures)
    assert "401" in stored and "[redacted]" in stored
    assert key not in stored and "CANARY" not in stored
    db = (demo_ws.root / "catalog.db").read_bytes()
    assert key.encode() not in db
