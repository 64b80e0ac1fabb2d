"""Shared fixtures. Everything is offline and runs on a CPU."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

# Idle OpenMP threads sleep instead of spinning: on shared cores spinning made a text query 17× slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tone(seconds: float = 2.0, freq: float = 440.0, sr: int = 16_000, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def settings(tmp_path):
    from core.store.settings import load_settings
    return load_settings(workspace=tmp_path / "ws", seed_demo=False)


@pytest.fixture
def ws(settings):
    from core.store.workspace import Workspace
    return Workspace(settings.workspace, settings)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside the repo")
    return SHARED_DATA


@pytest.fixture
def demo_ws(ws, shared_data):
    """A workspace holding the 10 real ovos_animals clips (with their meta.csv labels)."""
    from core.pipeline.importer import import_paths
    report = import_paths(ws, [shared_data / "ovos_animals"])
    assert report.count("imported") == 10, report.summary()
    return ws


@pytest.fixture
def app_factory():
    """Launch the real Blocks app in-process on a free port: `url = app_factory(state)`."""
    launched = []

    def start(state) -> str:
        from app import build_app, head_html
        demo = build_app(state)
        demo.queue()
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    head=head_html(), allowed_paths=[str(state.ws.root)])
        launched.append(demo)
        return f"http://127.0.0.1:{port}/"

    yield start
    for demo in launched:
        demo.close()


@pytest.fixture
def auth_app_factory():
    """Like app_factory, with access control: `url = auth_app_factory(state, policy)` launches the app
    the way app.py does for that policy (Gradio sign-in, or visitor mode with /login)."""
    launched = []

    def start(state, policy) -> str:
        from app import build_app, head_html
        from ui import guard
        demo = build_app(state, policy)
        demo.queue()
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    head=head_html(), allowed_paths=guard.served_paths(state.ws), **guard.launch_options(demo, policy))
        guard.after_launch(demo, policy)
        launched.append(demo)
        return f"http://127.0.0.1:{port}/"

    yield start
    for demo in launched:
        demo.close()
