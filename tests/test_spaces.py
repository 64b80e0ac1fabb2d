"""Spaces readiness: the ZeroGPU decorator is `spaces.GPU` where that package exists, a no-op elsewhere."""
from __future__ import annotations

import importlib
import sys
import types


def test_gpu_is_a_no_op_without_the_spaces_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)          # importing it now fails
    import core.models.gpu
    gpu = importlib.reload(core.models.gpu)
    try:
        def work(x):
            return x + 1
        assert not gpu.available()
        assert gpu.gpu(work) is work and gpu.gpu(duration=120)(work) is work
    finally:
        monkeypatch.undo()
        importlib.reload(core.models.gpu)


def test_gpu_uses_spaces_gpu_when_present(monkeypatch):
    calls = []

    def fake_gpu(fn=None, **options):
        calls.append(options)
        if fn is None:
            return lambda f: ("wrapped", f)
        return ("wrapped", fn)
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))
    import core.models.gpu
    gpu = importlib.reload(core.models.gpu)
    try:
        def work():
            return 1
        assert gpu.available()
        assert gpu.gpu(work) == ("wrapped", work)
        assert gpu.gpu(duration=300)(work) == ("wrapped", work) and calls[-1] == {"duration": 300}
    finally:
        monkeypatch.undo()
        importlib.reload(core.models.gpu)
