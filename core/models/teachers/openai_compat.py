"""A teacher behind any OpenAI-compatible chat-completions endpoint that accepts audio input.

Each clip becomes one request: a user message with the prompt and an `input_audio` part
(base64 16-bit WAV). Works with a local vLLM serving an audio LLM (Qwen2-Audio, Qwen2.5-Omni…)
or a hosted API.

    settings.openai_base_url   e.g. http://127.0.0.1:8000/v1
    settings.openai_model      the served model's name
    HEARSAY_OPENAI_API_KEY     (or OPENAI_API_KEY) — environment only, never stored in the catalogue

Timeouts, retries with exponential backoff on 429 / 5xx / connection errors (honouring
Retry-After), and a cap on concurrent requests. Extra settings: `openai_timeout` (s),
`openai_max_retries`, `openai_concurrency`, `openai_max_tokens`.
"""
from __future__ import annotations

import base64
import io
import random
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from core.auth.access import redact
from core.store.settings import Settings, load_settings
from core.models.teachers.base import SAMPLE_RATE, Teacher, TeacherOutput

DEFAULT_PROMPT = ("Describe this sound in one short sentence for a sound-search index: what makes the sound, "
                  "what happens over time, and the setting. If someone speaks, quote the words. "
                  "Answer with the sentence only.")
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class TeacherHTTPError(RuntimeError):
    """The endpoint's answer when it is not a caption. Its body is kept short and without credentials:
    some endpoints echo the request, headers included, and the message ends up in the catalogue."""

    def __init__(self, status: int, body: str, *secrets: str | None):
        super().__init__(f"HTTP {status}: {redact(body, *secrets)[:300]}")
        self.status = status


class OpenAICompatTeacher(Teacher):
    name = "openai-compatible"

    def __init__(self, settings: Settings | None = None, prompt: str | None = None, *, base_url: str | None = None,
                 model: str | None = None, api_key: str | None = None, timeout: float | None = None,
                 max_retries: int | None = None, concurrency: int | None = None, max_tokens: int | None = None,
                 backoff: float = 1.0):
        self.settings = settings or load_settings()
        extra = self.settings.extra
        self.base_url = (base_url or self.settings.openai_base_url).rstrip("/")
        self.model_id = model or self.settings.openai_model
        self.prompt = prompt or DEFAULT_PROMPT
        self._api_key = api_key if api_key is not None else self.settings.openai_api_key   # kept in memory only
        self.timeout = float(timeout or extra.get("openai_timeout", 120))
        self.max_retries = int(max_retries if max_retries is not None else extra.get("openai_max_retries", 4))
        self.concurrency = max(1, int(concurrency or extra.get("openai_concurrency", 4)))
        self.max_tokens = int(max_tokens or extra.get("openai_max_tokens", 96))
        self.backoff = backoff
        self.batch_size = self.concurrency * 2
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import httpx
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout,
                                        limits=httpx.Limits(max_connections=self.concurrency))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- requests ------------------------------------------------------------------------------
    def request_body(self, wave: np.ndarray) -> dict:
        return {
            "model": self.model_id,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": self.prompt},
                {"type": "input_audio", "input_audio": {"data": wav_base64(wave), "format": "wav"}},
            ]}],
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
        }

    def caption_one(self, wave: np.ndarray) -> TeacherOutput:
        import httpx

        body = self.request_body(wave)
        attempt = 0
        while True:
            try:
                response = self.client.post("/chat/completions", json=body)
                if response.status_code == 200:
                    return self._parse(response.json())
                error: Exception = TeacherHTTPError(response.status_code, response.text, self._api_key)
                retryable = response.status_code in RETRY_STATUS
                wait = _retry_after(response.headers.get("retry-after"))
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                error, retryable, wait = exc, True, None
            if not retryable or attempt >= self.max_retries:
                raise error
            delay = wait if wait is not None else self.backoff * (2 ** attempt) * (0.5 + random.random())
            time.sleep(min(delay, 60.0))
            attempt += 1

    def _parse(self, data: dict) -> TeacherOutput:
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"unexpected response: {str(data)[:300]}") from None
        content = message.get("content")
        if isinstance(content, list):                      # some servers return content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        text = " ".join(str(content or "").split()).strip().strip('"')
        if not text:
            raise ValueError("the endpoint returned an empty caption")
        return self.output(text, extra={"usage": data.get("usage", {})})

    # -- batches -------------------------------------------------------------------------------
    def caption_each(self, waves: list[np.ndarray]) -> list[TeacherOutput | Exception]:
        """Clips go out concurrently (at most `concurrency` at once); a failure stays with its clip."""
        def one(wave):
            try:
                return self.caption_one(wave)
            except Exception as exc:  # noqa: BLE001 - recorded per clip by the caller
                return exc
        if not waves:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(waves))) as pool:
            return list(pool.map(one, waves))

    def caption(self, waves: list[np.ndarray]) -> list[TeacherOutput]:
        results = self.caption_each(waves)
        for r in results:
            if isinstance(r, Exception):
                raise r
        return results


def wav_base64(wave: np.ndarray, sr: int = SAMPLE_RATE) -> str:
    import soundfile as sf

    pcm = (np.clip(np.asarray(wave, dtype=np.float32), -1, 1) * 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, sr, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
