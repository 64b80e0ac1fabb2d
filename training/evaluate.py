"""Measure any audio-text model on a labelled folder: zero-shot accuracy, R@1/5/10 both ways, mAP@10.

    python -m training evaluate --model shipped --data ../shared/data/jt_booth_sounds --json

A labelled folder is audio files plus a `meta.csv` with `filename` and `label` and/or
`caption` (the `shared/data` format; audio under `audio/` or beside the csv). Text
queries are the captions when there are any, else one "the sound of <label>" prompt per
class, and then any clip of that class counts as a hit. Zero-shot classification
averages the text embeddings of every prompt template. Works without a workspace.
"""
from __future__ import annotations

import csv
import hashlib
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.store import audio

from core.pipeline import metrics
from core.models.embedder import Embedder
from core.models.zero_shot import DEFAULT_TEMPLATES, classifier, clean_label, prompt   # ev.* names tabs use
QUERY_TEMPLATE = "the sound of {label}"           # the retrieval query when a folder has labels only
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aiff", ".aif", ".au", ".m4a", ".webm"}
SUMMARY_KEYS = ("model", "data", "clips", "zero_shot_acc", "t2a_r1", "t2a_r5", "t2a_r10",
                "a2t_r1", "a2t_r5", "a2t_r10", "map10", "seconds")
METRIC_KEYS = ("zero_shot_acc", "t2a_r1", "t2a_r5", "t2a_r10", "a2t_r1", "a2t_r5", "a2t_r10", "map10")

Progress = Callable[[int, int, str], None]


class Cancelled(RuntimeError):
    """The caller set the cancel event; nothing was recorded."""


# -- the data ------------------------------------------------------------------------------------
@dataclass
class EvalItem:
    name: str                              # file name (or clip id) shown in reports
    label: str | None
    caption: str | None
    load: Callable[[], np.ndarray]         # → 16 kHz mono float32
    published: str | None = None           # a workspace clip's published caption ("" none); None: ask the teacher


@dataclass
class EvalSet:
    name: str                              # what the report calls the data (a folder path, "workspace")
    items: list[EvalItem]
    fingerprint: str                       # changes whenever audio, labels or captions change
    missing: list[str] = field(default_factory=list)   # meta.csv rows whose file is not there

    @property
    def labelled(self) -> bool:
        return any(i.label for i in self.items)

    @property
    def captioned(self) -> bool:
        return any(i.caption for i in self.items)


def _norm_caption(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _read_meta(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)]


def _find_audio(folder: Path, name: str, by_name: dict[str, Path]) -> Path | None:
    for candidate in (folder / name, folder / "audio" / name):
        if candidate.is_file():
            return candidate
    return by_name.get(Path(name).name)


def _fingerprint(parts: Sequence[tuple[str, str, str, str]]) -> str:
    """sha256 over (name, content hash, label, caption), order-free: the data's identity in the history."""
    h = hashlib.sha256()
    for part in sorted(parts):
        h.update("\x1f".join(part).encode("utf-8", "replace") + b"\x1e")
    return h.hexdigest()[:16]


def load_folder(folder: str | Path) -> EvalSet:
    """Read a labelled folder. Without a meta.csv, sub-folder names are the labels (`dog/1.wav`)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    by_name = {}
    for p in files:
        by_name.setdefault(p.name, p)
    meta_path = folder / "meta.csv"
    rows: list[tuple[Path, str | None, str | None]] = []
    missing: list[str] = []
    if meta_path.is_file():
        table = _read_meta(meta_path)
        if table and "filename" not in table[0]:
            raise ValueError(f"{meta_path} has no 'filename' column")
        for row in table:
            name = row.get("filename", "")
            if not name:
                continue
            path = _find_audio(folder, name, by_name)
            if path is None:
                missing.append(name)
                continue
            rows.append((path, clean_label(row["label"]) if row.get("label") else None,
                         _norm_caption(row["caption"]) if row.get("caption") else None))
    else:
        rows = [(p, clean_label(p.parent.name) if p.parent != folder else None, None) for p in files]
    rows = [r for r in rows if r[1] or r[2]]
    if not rows:
        raise ValueError(f"{folder} holds no audio with a label or caption "
                         "(expected meta.csv with filename and label and/or caption)")
    items = [EvalItem(p.relative_to(folder).as_posix(), label, caption,
                      (lambda p=p: audio.decode(p)[0])) for p, label, caption in rows]
    fingerprint = _fingerprint([(i.name, audio.file_hash(p), i.label or "", i.caption or "")
                                for i, (p, _, _) in zip(items, rows)])
    return EvalSet(str(folder), items, fingerprint, missing)


def load_workspace_set(ws) -> EvalSet:
    """The workspace's labelled clips: every clip whose recording's meta has a `label` (or `caption`)."""
    items, parts = [], []
    published = ws.catalog.published_captions()
    for rec in ws.catalog.recordings():
        label = clean_label(rec.meta["label"]) if rec.meta.get("label") else None
        caption = _norm_caption(rec.meta["caption"]) if rec.meta.get("caption") else None
        if not (label or caption):
            continue
        for clip in ws.catalog.clips(rec.id):
            pub = published.get(clip.id)
            items.append(EvalItem(f"{rec.original_name}@{clip.start:g}", label, caption,
                                  (lambda clip=clip: ws.load_clip(clip)), pub.text if pub else ""))
            parts.append((items[-1].name, ws.clip_key(clip), label or "", caption or ""))
    if not items:
        raise ValueError("the workspace has no labelled clips (import a folder whose meta.csv has a label column)")
    return EvalSet(f"workspace:{ws.root}", items, _fingerprint(parts))


def load_data(spec: str | Path, ws=None) -> EvalSet:
    """"workspace" → the workspace's labelled clips; anything else → a labelled folder."""
    if str(spec) == "workspace":
        if ws is None:
            raise ValueError("'workspace' data needs a workspace")
        return load_workspace_set(ws)
    return load_folder(spec)


# -- the result ----------------------------------------------------------------------------------
@dataclass
class EvalResult:
    model: str
    data: str
    clips: int
    zero_shot_acc: float | None
    t2a_r1: float | None
    t2a_r5: float | None
    t2a_r10: float | None
    a2t_r1: float | None
    a2t_r5: float | None
    a2t_r10: float | None
    map10: float | None
    seconds: float
    model_id: str = ""
    fingerprint: str = ""
    queries: str = ""                      # "captions" | "labels"
    templates: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    per_class_acc: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)    # rows: true class, columns: predicted
    failed: list[str] = field(default_factory=list)             # "name: why" for clips that could not be read
    missing: list[str] = field(default_factory=list)
    fusion: float | None = None            # late-fusion caption weight, when asked for (core/pipeline/fusion.py)
    captions: dict = field(default_factory=dict)   # METRIC_KEYS of the teacher captions alone (with fusion)
    fused: dict = field(default_factory=dict)      # METRIC_KEYS of student ⊕ captions at weight `fusion`

    def summary(self) -> dict:
        """The CLI's one-line JSON: SUMMARY_KEYS, plus fusion / captions / fused when fusion was asked for."""
        out = {k: getattr(self, k) for k in SUMMARY_KEYS}
        if self.fusion is not None:
            out.update(fusion=self.fusion, captions=self.captions, fused=self.fused)
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


# -- the evaluation ------------------------------------------------------------------------------
def embed_items(model: Embedder, items: Sequence[EvalItem], *, batch_size: int = 32,
                progress: Progress | None = None, cancel: threading.Event | None = None
                ) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode and embed in batches (never every wave in memory at once).

    Returns (embeddings of the readable clips, their indices into `items`, "name: why" for the rest).
    """
    chunks, kept, failed = [], [], []
    for start in range(0, len(items), batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled("evaluation cancelled")
        if progress:
            progress(start, len(items), items[start].name)
        waves, idx = [], []
        for i in range(start, min(start + batch_size, len(items))):
            try:
                waves.append(items[i].load())
                idx.append(i)
            except Exception as exc:  # noqa: BLE001 - one unreadable clip is reported, not fatal
                failed.append(f"{items[i].name}: {exc}")
        if waves:
            chunks.append(np.asarray(model.embed_audio(waves), dtype=np.float32))
            kept += idx
    if progress:
        progress(len(items), len(items), "embedded")
    dim = getattr(model, "dim", 0)
    return (np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)), kept, failed


def zero_shot(audio_emb: np.ndarray, class_emb: np.ndarray, truth: Sequence[int], classes: Sequence[str]
              ) -> tuple[float, dict[str, float], np.ndarray]:
    """(accuracy, per-class accuracy, confusion matrix) of nearest-class-prompt classification."""
    pred = metrics.zero_shot_predictions(audio_emb, class_emb, truth)     # ties count against the model
    acc = float(np.mean(pred == np.asarray(truth)))
    confusion = metrics.confusion_matrix(pred, truth, len(classes))
    per_class = metrics.per_class_accuracy(confusion)
    return acc, {c: float(a) for c, a in zip(classes, per_class)}, confusion


def retrieval_queries(items: Sequence[EvalItem]) -> tuple[str, list[str], np.ndarray]:
    """(kind, query texts, relevant[query, clip]).

    Captions when present: each distinct caption is a query whose hits are the clips carrying it
    (clips without a caption stay in as distractors). Else one QUERY_TEMPLATE prompt per class.
    """
    kind = "captions" if any(i.caption for i in items) else "labels"
    keys = [(i.caption if kind == "captions" else i.label) or "" for i in items]
    texts = sorted({k for k in keys if k})
    index = {t: q for q, t in enumerate(texts)}
    relevant = np.zeros((len(texts), len(items)), dtype=bool)
    for j, k in enumerate(keys):
        if k:
            relevant[index[k], j] = True
    queries = texts if kind == "captions" else [prompt(t, QUERY_TEMPLATE) for t in texts]
    return kind, queries, relevant


def _retrieval(audio_emb: np.ndarray, text_emb: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """metrics.retrieval_report, with audio→text asked only of clips that have a matching text."""
    out = metrics.retrieval_report(audio_emb, text_emb, relevant)
    answerable = relevant.any(axis=0)
    if not answerable.all():
        sim = (text_emb @ audio_emb.T).T[answerable]
        out.update({f"a2t_r{k}": v for k, v in metrics.recall_at_k(sim, relevant.T[answerable]).items()})
    return out


# -- late fusion with the teacher's captions -----------------------------------------------------
class TeacherCaptions:
    """The caption side of fusion: each clip's published caption (workspace clips), else the embedded
    teacher's caption of its audio (the `teacher` baseline, cached); texts through MiniLM."""

    def __init__(self, cache_path: str | Path | None = None, device: str | None = None):
        self.cache_path, self.device, self._baseline = cache_path, device, None

    def captions(self, items: Sequence[EvalItem], batch_size: int = 32) -> list[str]:
        out = [it.published or "" for it in items]
        todo = [j for j, it in enumerate(items) if it.published is None]
        if todo and self._baseline is None:
            from training.baselines import TeacherCaptionEmbedder
            self._baseline = TeacherCaptionEmbedder(device=self.device, cache_path=self.cache_path)
        for start in range(0, len(todo), batch_size):
            idx = todo[start:start + batch_size]
            for j, text in zip(idx, self._baseline.captions([items[j].load() for j in idx])):
                out[j] = text
        return out

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        from core.models.text_encoder import encode
        return encode(list(texts), device=self.device or "cpu")


def _caption_embeddings(side, items: Sequence[EvalItem]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings of each clip's caption, which clips have one)."""
    texts = side.captions(items)
    has = np.array([bool(t and t.strip()) for t in texts], dtype=bool)
    emb = np.asarray(side.embed_text([t if h else "-" for t, h in zip(texts, has)]), dtype=np.float64)
    return emb, has


def _score_metrics(zs: np.ndarray | None, truth: Sequence[int], t2a: np.ndarray | None,
                   a2t: np.ndarray | None, relevant: np.ndarray | None) -> dict[str, float | None]:
    """METRIC_KEYS from score matrices: zs [clips, classes], t2a [texts, clips], a2t [clips, texts]."""
    out: dict[str, float | None] = {k: None for k in METRIC_KEYS}
    if zs is not None and len(truth):
        pred = metrics.zero_shot_from_scores(zs, truth)
        out["zero_shot_acc"] = _round(np.mean(pred == np.asarray(truth)))
    if t2a is not None and relevant is not None:
        out.update({f"t2a_r{k}": _round(v) for k, v in metrics.recall_at_k(t2a, relevant).items()})
        out["map10"] = _round(metrics.map_at_k(t2a, relevant, 10))
        answerable = relevant.any(axis=0)
        out.update({f"a2t_r{k}": _round(v) for k, v in
                    metrics.recall_at_k(a2t[answerable], relevant.T[answerable]).items()})
    return out


def _fusion_report(model: Embedder, side, items: Sequence[EvalItem], emb: np.ndarray, weight: float,
                   classes: Sequence[str], with_label: Sequence[int], truth: Sequence[int],
                   templates: Sequence[str], adaptive: bool = True) -> tuple[dict, dict]:
    """(captions-alone metrics, fused metrics): the student's and the captions' score matrices fused
    per row by core.pipeline.fusion.fuse (a clip over class prompts; a text query over clips; a clip over texts)."""
    from core.pipeline import fusion
    cap_emb, has = _caption_embeddings(side, items)
    zs_a = zs_c = None
    if with_label:
        zs_a = emb[with_label].astype(np.float64) @ classifier(model, classes, templates).T.astype(np.float64)
        zs_c = cap_emb[with_label] @ classifier(side, classes, templates).T.astype(np.float64)
        zs_c[~has[with_label]] = np.nan                    # no caption: no caption evidence
    _, queries, relevant = retrieval_queries(items)
    t2a_a = np.asarray(model.embed_text(queries), np.float64) @ emb.T.astype(np.float64)
    t2a_c = np.asarray(side.embed_text(queries), np.float64) @ cap_emb.T
    t2a_c[:, ~has] = np.nan
    def fuse(a, c, w):
        return fusion.fuse(a, c, w, adaptive=adaptive)
    captions = _score_metrics(None if zs_c is None else fuse(zs_a, zs_c, 1.0), truth,
                              fuse(t2a_a, t2a_c, 1.0), fuse(t2a_a.T, t2a_c.T, 1.0), relevant)
    fused = _score_metrics(None if zs_a is None else fuse(zs_a, zs_c, weight), truth,
                           fuse(t2a_a, t2a_c, weight), fuse(t2a_a.T, t2a_c.T, weight), relevant)
    return captions, fused


def evaluate(model: Embedder, data: EvalSet | str | Path, *, name: str | None = None,
             templates: Sequence[str] = DEFAULT_TEMPLATES, batch_size: int = 32,
             progress: Progress | None = None, cancel: threading.Event | None = None,
             fusion: float | None = None, caption_side=None, fusion_adaptive: bool = True) -> EvalResult:
    """Every metric of one model on one labelled set.

    With `fusion` (0..1, the caption weight) also the teacher captions alone and the model fused with
    them (core/pipeline/fusion.py, query-adaptive unless `fusion_adaptive` is False); `caption_side` gives
    each clip's caption and embeds texts (default TeacherCaptions: published captions of workspace clips,
    else the embedded teacher's)."""
    if fusion is not None and not 0.0 <= float(fusion) <= 1.0:
        raise ValueError(f"--fusion must be between 0 and 1, not {fusion}")
    started = time.perf_counter()
    if not isinstance(data, EvalSet):
        data = load_folder(data)
    templates = [t for t in templates if t.strip()] or list(DEFAULT_TEMPLATES)
    for t in templates:
        if "{label}" not in t:
            raise ValueError(f"prompt template {t!r} has no {{label}} placeholder")
    emb, kept, failed = embed_items(model, data.items, batch_size=batch_size, progress=progress, cancel=cancel)
    items = [data.items[i] for i in kept]
    result = dict(zero_shot_acc=None, t2a_r1=None, t2a_r5=None, t2a_r10=None,
                  a2t_r1=None, a2t_r5=None, a2t_r10=None, map10=None)
    classes, per_class, confusion, truth = [], {}, [], []
    with_label = [j for j, it in enumerate(items) if it.label]
    if with_label:
        classes = sorted({items[j].label for j in with_label})
        truth = [classes.index(items[j].label) for j in with_label]
        acc, per_class, cm = zero_shot(emb[with_label], classifier(model, classes, templates), truth, classes)
        result["zero_shot_acc"], confusion = acc, cm.tolist()
    if items:
        kind, queries, relevant = retrieval_queries(items)
        text_emb = np.asarray(model.embed_text(queries), dtype=np.float32)
        result.update(_retrieval(emb, text_emb, relevant))
    else:
        kind = ""
    captions, fused = {}, {}
    if fusion is not None and items:
        captions, fused = _fusion_report(model, caption_side or TeacherCaptions(), items, emb, float(fusion),
                                         classes, with_label, truth, templates, fusion_adaptive)
    return EvalResult(
        model=name or getattr(model, "model_id", type(model).__name__), data=data.name, clips=len(items),
        **{k: _round(v) for k, v in result.items()}, seconds=round(time.perf_counter() - started, 2),
        model_id=getattr(model, "model_id", ""), fingerprint=data.fingerprint, queries=kind,
        templates=list(templates), classes=classes, per_class_acc={c: _round(a) for c, a in per_class.items()},
        confusion=confusion, failed=failed, missing=list(data.missing),
        fusion=None if fusion is None else float(fusion), captions=captions, fused=fused)


# -- models --------------------------------------------------------------------------------------
BUILTIN_MODELS = ("shipped", "teacher", "clap")


def resolve_model(name: str, ws=None, device: str | None = None) -> Embedder:
    """`teacher`, `clap[:repo-or-folder]`, `package.module:factory`, or whatever `core.models.registry` resolves
    (`shipped`, a workspace model id, a model folder)."""
    if name == "teacher":
        from training.baselines import TeacherCaptionEmbedder
        cache = ws.cache_dir / "teacher_baseline_captions.jsonl" if ws is not None else None
        return TeacherCaptionEmbedder(device=device, cache_path=cache)
    if name == "clap" or name.startswith("clap:"):
        from training.baselines import ClapEmbedder
        return ClapEmbedder(name.partition(":")[2] or None, device=device)
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", name) and not Path(name).exists():
        import importlib
        module, attr = name.split(":")
        return getattr(importlib.import_module(module), attr)()
    from core.models.registry import get_embedder
    from core.store.settings import resolve_device
    return get_embedder(name, ws=ws, device=device or resolve_device("auto"))     # else ModelUnavailable


def available_models(ws=None) -> list[str]:
    """What the Evaluate tab offers: the built-ins, then the workspace's registered models."""
    from core.models.registry import choices
    return choices(ws, *BUILTIN_MODELS, shipped=False)


def record(ws, result: EvalResult):
    """Store a result in the workspace catalogue (history): model, data, fingerprint, date, every metric."""
    details = result.to_dict()
    return ws.catalog.add_evaluation(result.model, result.data, result.fingerprint, details)


def evaluate_models(model_names: Sequence[str], data: EvalSet | str | Path, *, ws=None,
                    templates: Sequence[str] = DEFAULT_TEMPLATES, device: str | None = None,
                    progress: Progress | None = None, cancel: threading.Event | None = None,
                    store: bool = True) -> tuple[list[EvalResult], dict[str, str]]:
    """Evaluate several models on one set (what the Evaluate tab runs); store each result in `ws`.

    Returns (results, {model name: error}) — a model that cannot load does not stop the others.
    """
    if not isinstance(data, EvalSet):
        data = load_data(data, ws)
    results, errors = [], {}
    for n, name in enumerate(model_names):
        def step(done: int, total: int, what: str, n=n, name=name) -> None:
            if progress:
                progress(n * total + done, len(model_names) * total, f"{name}: {what}")
        try:
            model = resolve_model(name, ws, device)
            result = evaluate(model, data, name=name, templates=templates, progress=step, cancel=cancel)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - reported next to the others' results
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        if ws is not None and store:
            record(ws, result)
        results.append(result)
    return results, errors


def history(ws) -> list[dict]:
    """Past evaluations, newest first, flattened for a table."""
    rows = []
    for e in ws.catalog.evaluations():
        row = {"date": e.created, "model": e.model, "data": e.data, "fingerprint": e.fingerprint}
        row.update({k: e.metrics.get(k) for k in ("clips", *METRIC_KEYS)})
        rows.append(row)
    return rows
