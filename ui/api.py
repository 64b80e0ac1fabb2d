"""The documented API: four endpoints with named parameters, for `gradio_client` and plain HTTP.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    hits = client.predict(query="dog barking", k=5, api_name="/search")
    hits[0]["audio_url"]                      # fetch it to hear the clip

- `search(query, k=10, model="active")` → [{clip_id, score, caption, tags, audio_url, name, start, end}]
- `search_audio(file, k=10, model="active")` → the same, for an uploaded sound
- `classify(file_or_clip, labels, model="active")` → {label: probability}, most likely first
- `caption(file, teacher="embedded")` → {caption, tags, teacher, seconds}

Each endpoint is a `gr.api` (its schema comes from the type hints below) that calls core/pipeline/search.py,
core/pipeline/index.py or core/teachers; the role checks are ui/guard.py's, from core/access.PERMISSIONS.
`audio_url` points at `/audio/<content key>.wav` (a route added when the app launches): the clip's
cached WAV, found by its content key, so no server path is ever shown.
"""
from __future__ import annotations

import functools
import re
import time
from pathlib import Path

import gradio as gr
import httpx
from fastapi import HTTPException, Request
from fastapi.responses import FileResponse
from gradio.data_classes import FileData

from core.auth import access

from core.store import audio

from core.pipeline import index, search
from ui import guard
from ui.search import AUTO_INDEX, caller_role, embedder_for
from ui.search_cards import player_url
from ui.state import AppState

MAX_K = 50
CAPTION_SECONDS = 30.0               # the teacher hears at most this much of an upload: a visitor's caption stays cheap
FREE_TEACHERS = ("embedded",)        # offline and local; the others load a 7B model or spend an API key
AUDIO_ROUTE = "/audio"
_AUDIO_NAME = re.compile(r"^[0-9a-f]{16,128}_\d+\.\d{3}-\d+\.\d{3}\.wav$")   # Workspace.clip_wav_path's names


# -- input checks: one clear message each ---------------------------------------------------------------
def _k(k) -> int:
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise gr.Error(f"k must be a whole number from 1 to {MAX_K}.", title="Bad input") from None
    if not 1 <= k <= MAX_K:
        raise gr.Error(f"k must be from 1 to {MAX_K} (got {k}).", title="Bad input")
    return k


def _file_path(file) -> str:
    """The uploaded file's path in Gradio's upload cache (Gradio checked that it is one)."""
    path = file.get("path") if isinstance(file, dict) else getattr(file, "path", file)
    if not path or not isinstance(path, str):
        raise gr.Error("Send an audio file (gradio_client: handle_file('sound.wav')).", title="Bad input")
    return path


def _clip_id(value) -> int | None:
    """A clip id when `file_or_clip` names one (an int or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _bad_input(exc: Exception) -> gr.Error:
    return gr.Error(str(exc).strip("'\""), title="Bad input")


# -- results ---------------------------------------------------------------------------------------------
def base_url(request: gr.Request | None) -> str:
    """The address the caller reached us at (a proxy's forwarded host and scheme first)."""
    headers = getattr(request, "headers", None) or {}
    url = getattr(getattr(request, "request", None), "url", None)
    host = headers.get("x-forwarded-host") or headers.get("host") or getattr(url, "netloc", "") or "127.0.0.1:7860"
    scheme = headers.get("x-forwarded-proto") or getattr(url, "scheme", "") or "http"
    return f"{scheme.split(',')[0].strip()}://{host.split(',')[0].strip()}"


def hit_dict(state: AppState, hit: search.Hit, root: str) -> dict:
    url = player_url(state.ws, hit)      # None: deleted since it was indexed
    audio_url = f"{root}/{url}" if url else None
    return {"clip_id": hit.clip_id, "score": round(hit.score, 4), "caption": hit.caption, "tags": hit.tags,
            "audio_url": audio_url, "name": hit.name, "start": hit.start, "end": hit.end}


def _embedder(state: AppState, model: str):
    embedder = embedder_for(state, model or "active", caller_role())
    try:
        index.catch_up(state.ws, embedder, max_new=AUTO_INDEX, wait=False)   # answers at once; syncs behind
    except index.IndexUnavailable as exc:
        raise gr.Error(str(exc).strip("'\""))
    return embedder


# -- the endpoints -----------------------------------------------------------------------------------------
class Endpoints:
    """The four API functions, as methods (plain values in and out: a test can call them without a server)."""

    def __init__(self, state: AppState):
        self.state, self.ws = state, state.ws

    def search_clips(self, query: str, k: int = 10, model: str = "active", request: gr.Request = None) -> list[dict]:
        """Find clips that sound like a description.

        Args:
            query: what the sound is like, e.g. "dog barking"
            k: how many clips to return (1 to 50)
            model: "active" (the model in use), "shipped", or a registered model id
        Returns:
            the best clips first: {clip_id, score, caption, tags, audio_url, name, start, end}
        """
        if not (query or "").strip():
            raise gr.Error("Give a query: a description of the sound you are looking for.", title="Bad input")
        k = _k(k)
        embedder = _embedder(self.state, model)
        try:
            page = search.search_text(self.ws, embedder, query.strip(), k=k,    # ranked as the Search tab ranks
                                      hybrid_weight=float(self.ws.settings.fusion_weight))
        except (ValueError, KeyError, index.IndexUnavailable) as exc:
            raise _bad_input(exc) from None
        root = base_url(request)
        return [hit_dict(self.state, h, root) for h in page.hits]

    def search_audio(self, file: FileData, k: int = 10, model: str = "active", request: gr.Request = None) -> list[dict]:
        """Find clips that sound like an uploaded sound (any common audio format).

        Args:
            file: the sound to match (gradio_client: handle_file("query.wav"))
            k: how many clips to return (1 to 50)
            model: "active" (the model in use), "shipped", or a registered model id
        Returns:
            the best clips first: {clip_id, score, caption, tags, audio_url, name, start, end}
        """
        path = _file_path(file)
        k = _k(k)
        embedder = _embedder(self.state, model)
        try:
            page = search.search_audio(self.ws, embedder, path, k=k)
        except (ValueError, KeyError, index.IndexUnavailable) as exc:
            raise _bad_input(exc) from None
        root = base_url(request)
        return [hit_dict(self.state, h, root) for h in page.hits]

    def classify(self, file_or_clip: FileData | int, labels: list[str] | str, model: str = "active") -> dict[str, float]:
        """Zero-shot classification of a sound (an upload, or a clip id) among labels you choose.

        Args:
            file_or_clip: an uploaded sound (handle_file("sound.wav")), or the id of a clip in the workspace
            labels: two or more labels, as a list or comma-separated ("dog, cat, rain")
            model: "active" (the model in use), "shipped", or a registered model id
        Returns:
            {label: probability}, most likely first (the probabilities sum to 1)
        """
        names = search.parse_labels(labels or "")
        if len(names) < 2:
            raise gr.Error("Give at least two labels, as a list or separated by commas.", title="Bad input")
        clip_id = _clip_id(file_or_clip)
        path = None if clip_id is not None else _file_path(file_or_clip)
        embedder = _embedder(self.state, model)
        try:
            result = search.classify(self.ws, embedder, names, clip_id=clip_id, source=path)
        except KeyError:
            raise gr.Error(f"There is no indexed clip {clip_id}.", title="Bad input") from None
        except (ValueError, index.IndexUnavailable) as exc:
            raise _bad_input(exc) from None
        return {label: round(p, 6) for label, p in result.ranked()}

    def caption(self, file: FileData, teacher: str = "embedded") -> dict:
        """Describe a sound with a teacher (the embedded offline teacher by default).

        Args:
            file: the sound to describe (handle_file("sound.wav")); the teacher hears its first 30 s
            teacher: "embedded" (anyone); "transformers" or "openai-compatible" need an annotator's sign-in
        Returns:
            {caption, tags: {tag: score}, teacher, seconds}
        """
        from core.models.teachers import get_teacher
        path = _file_path(file)
        name = (teacher or "embedded").strip().lower()
        if name not in FREE_TEACHERS and not access.allows(caller_role(), access.ANNOTATOR):
            raise gr.Error(f"The {name} teacher is for signed-in annotators; use teacher=\"embedded\".",
                           title="Not allowed")
        try:
            wave, _ = audio.decode(path)
            chosen = get_teacher(name, self.ws.settings)
        except ValueError as exc:            # unreadable audio, unknown teacher
            raise _bad_input(exc) from None
        wave = wave[:int(CAPTION_SECONDS * audio.SAMPLE_RATE)]
        if len(wave) == 0:
            raise gr.Error("This audio file holds no sound.", title="Bad input")
        out = chosen.caption_each([wave])[0]
        if isinstance(out, Exception):
            raise gr.Error(f"The {name} teacher could not caption this sound: {out}")
        return {"caption": out.caption, "tags": {t: round(float(s), 4) for t, s in out.tags.items()},
                "teacher": chosen.identity, "seconds": round(len(wave) / audio.SAMPLE_RATE, 3)}


def make_endpoints(state: AppState) -> dict:
    """The four API functions by api_name."""
    ep = Endpoints(state)
    return {"search": ep.search_clips, "search_audio": ep.search_audio, "classify": ep.classify, "caption": ep.caption}


def build(state: AppState) -> None:
    """Call inside the Blocks: registers the endpoints (no components). Searches share the Search tab's queue."""
    endpoints = make_endpoints(state)
    for name in ("search", "search_audio", "classify"):
        gr.api(endpoints[name], api_name=name, concurrency_id=guard.SEARCH_QUEUE, concurrency_limit=guard.SEARCH_LIMIT)
    gr.api(endpoints["caption"], api_name="caption", concurrency_id="api_caption", concurrency_limit=1)
    demo = gr.context.Context.root_block
    if demo is not None:
        serve_clip_audio(demo, state)


# -- audio by content key ------------------------------------------------------------------------------------
def clip_audio_file(state: AppState, name: str, clip_id: int | None = None) -> Path | None:
    """The cached clip WAV of that name (`<recording hash>_<start>-<end>.wav`), or None. Not made yet:
    made now from `clip_id` when that clip's content key is this name (search results link their
    players this way, so a search makes no WAV that nobody plays)."""
    if not _AUDIO_NAME.match(name):
        return None
    path = state.ws.cache_dir / "clips" / name
    if path.is_file() or clip_id is None:
        return path if path.is_file() else None
    try:
        clip = state.ws.catalog.get_clip(int(clip_id))
        if f"{state.ws.clip_key(clip).replace(':', '_')}.wav" != name:
            return None
        return state.ws.clip_wav_path(clip)
    except (KeyError, OSError, ValueError):
        return None


def add_audio_route(app, state: AppState, policy: access.AccessPolicy | None) -> None:
    """GET /audio/<name>.wav on the running server. Whoever may load the page may play clips (as the
    Search tab's players do); when everyone must sign in, so must this."""
    def clip_audio(name: str, request: Request, clip: int | None = None):
        if policy is not None and policy.login and not policy.visitor_mode and guard.signed_in_user(request) is None:
            raise HTTPException(status_code=401, detail="Sign in first.")
        path = clip_audio_file(state, name, clip)
        if path is None:
            raise HTTPException(status_code=404, detail="No such clip audio.")
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "private, max-age=3600"})

    app.add_api_route(AUDIO_ROUTE + "/{name}", clip_audio, methods=["GET"], include_in_schema=False)


class ServerNotAnswering(RuntimeError):
    """The server was started but its address never answered."""


def wait_until_served(url: str, timeout: float = 60.0) -> None:
    """Wait for the server to answer on `url`, or raise naming the address.

    Gradio's own check after launch gives localhost a single 3-second try and then refuses to start
    ("a shareable link must be created"): on a busy 2-core machine (a training run, a CI suite) the
    first answer can take longer. We skip that check and wait here instead, patiently, and never
    through a proxy from the environment (localhost is never behind one)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=10) as http:
        while True:
            try:
                if http.head(url).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServerNotAnswering(f"The server started but does not answer at {url}.")
            time.sleep(0.25)


def serve_clip_audio(demo: gr.Blocks, state: AppState) -> None:
    """Add the audio route whenever this Blocks launches (the server app only exists from then on),
    and wait for the server ourselves (see wait_until_served) rather than through Gradio's check."""
    launch = demo.launch

    @functools.wraps(launch)
    def launch_with_audio(*args, **kwargs):
        wait = not kwargs.get("prevent_thread_lock", False)
        patient = not kwargs.get("share")
        result = launch(*args, **{**kwargs, "prevent_thread_lock": True, "_frontend": not patient})
        if patient:
            try:
                wait_until_served(demo.local_url)
            except ServerNotAnswering:
                demo.close()
                raise
        add_audio_route(demo.server_app, state, getattr(demo, "hearsay_policy", None))
        if wait:
            demo.block_thread()
        return result

    demo.launch = launch_with_audio
