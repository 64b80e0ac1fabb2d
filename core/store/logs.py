"""Structured logs: one JSON object per line in `<workspace>/logs/hearsay.jsonl`.

Everything logged under the "hearsay" logger lands there (the access guard logs every write and
every refusal with the user, so the file doubles as the audit trail). Extra fields passed with
`log.info("msg", extra={...})` become keys of the line.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
from datetime import datetime, timezone
from pathlib import Path

LOG_NAME = "hearsay.jsonl"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(workspace_root: str | Path, level: int = logging.INFO) -> Path:
    """Send the "hearsay" logger to the workspace's JSON-lines file (once per file; rotated at 5 MB)."""
    path = Path(workspace_root) / "logs" / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("hearsay")
    logger.setLevel(level)
    if not any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in logger.handlers):
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
        handler.setFormatter(JsonLines())
        logger.addHandler(handler)
    return path
