"""Regenerate assets/demo/teacher_captions.jsonl: the embedded teacher's captions of the demo clips.

    .venv/bin/python scripts/demo_captions.py

Seeds a scratch workspace with assets/demo, captions every clip with the embedded teacher (as
`python -m core caption` does) and writes each clip's teacher output with its cache key. seed_demo
restores them on first launch. Run it after changing the embedded teacher (its model, prompt or
composer): tests/test_demo_captions.py fails while the file is stale.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from core.models.teachers import get_teacher
    from core.pipeline import captioning
    from core.pipeline.importer import DEMO_CAPTIONS, import_paths
    from core.store.settings import ASSETS, load_settings
    from core.store.workspace import Workspace
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(workspace=Path(tmp) / "ws", seed_demo=False)
        ws = Workspace(settings=settings)
        import_paths(ws, [ASSETS / "demo"])
        clips = [c.id for c in ws.catalog.clips()]
        report = captioning.caption_clips(ws, clips, get_teacher("embedded", settings))
        print(report.summary())
        n = captioning.write_outputs(ws, clips, ASSETS / "demo" / DEMO_CAPTIONS)
    print(f"{n} captions written to assets/demo/{DEMO_CAPTIONS}")
    return 0 if n == len(clips) and not report.failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
