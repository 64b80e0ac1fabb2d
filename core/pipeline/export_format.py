"""The export's record layout, shared by writing and reading back: the columns of the flat
record (CSV, HF dataset) and the JSON text its nested values travel as.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

# Columns of the flat record, in the order CSV and the HF dataset show them.
COLUMNS = ["caption", "status", "annotator", "reason", "review_updated", "review_version",
           "caption_origin", "teacher", "model", "prompt", "caption_annotator", "confidence", "tags",
           "caption_created", "source", "original_name", "recording_sha256", "start", "end", "duration",
           "recording_meta", "clip_key", "history"]
JSON_COLUMNS = ("tags", "recording_meta", "history")


@dataclass(kw_only=True)
class Outcome:
    """What an export or an import got through: the records that failed, and whether it was cancelled."""
    cancelled: bool = False
    errors: list[str] = field(default_factory=list)

    def _summary(self, text: str, joiner: str, when_cancelled: str) -> str:
        """`text`, then "N failed (the first error …)", then what a cancel means."""
        if self.errors:
            text += f"{joiner}{len(self.errors)} failed ({self.errors[0]}{' …' if len(self.errors) > 1 else ''})"
        return text + (f" — {when_cancelled}" if self.cancelled else "")


def flat(record: dict) -> dict:
    """CSV/Arrow cells: nested values as JSON text."""
    return {k: (json.dumps(record[k], ensure_ascii=False) if k in JSON_COLUMNS else record[k]) for k in COLUMNS}


def unflat(row: dict) -> dict:
    """Undo `flat`: JSON text back to values; CSV's numbers come back as text too."""
    out = dict(row)
    for k in JSON_COLUMNS:
        if isinstance(out.get(k), str):
            out[k] = json.loads(out[k]) if out[k] else {}
    for k, kind in (("confidence", float), ("start", float), ("end", float), ("duration", float),
                    ("review_version", int)):
        if isinstance(out.get(k), str):
            out[k] = kind(out[k]) if out[k] else None
    return out
