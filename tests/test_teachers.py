"""Teachers: the embedded composer on real clips, the transformers path on a tiny random Qwen2-Audio,
and the OpenAI-compatible path against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from core.models.teachers import composer, get_teacher, teacher_names
from core.models.teachers.base import Teacher, TeacherOutput
from core.models.teachers.descriptors import describe
from core.models.teachers.vocabulary import entry, present_participle, third_person
from tests.conftest import free_port, tone

SR = 16_000


# -- registry and interface --------------------------------------------------------------------
def test_registry_names_and_errors(settings):
    assert teacher_names() == ["embedded", "transformers", "openai-compatible"]
    assert get_teacher("embedded", settings) is get_teacher("embedded", settings)      # shared, models load once
    assert get_teacher("openai", settings, fresh=True).name == "openai-compatible"    # alias
    with pytest.raises(ValueError, match="unknown teacher"):
        get_teacher("nope", settings)


def test_caption_each_isolates_a_failing_clip():
    class Picky(Teacher):
        name, model_id, prompt = "picky", "m", "p"

        def caption(self, waves):
            if any(len(w) == 3 for w in waves):
                raise RuntimeError("bad clip")
            return [self.output(f"{len(w)} samples") for w in waves]

    out = Picky().caption_each([np.zeros(5), np.zeros(3), np.zeros(7)])
    assert [o.caption if isinstance(o, TeacherOutput) else str(o) for o in out] == \
        ["5 samples", "bad clip", "7 samples"]
    assert Picky().cache_key("abc") != Teacher.cache_key(type("Other", (Picky,), {"prompt": "q"})(), "abc")


# -- wording -------------------------------------------------------------------------------------
def test_vocabulary_rows_name_real_classes_and_inflect():
    from core.models import yamnet
    from core.models.teachers.vocabulary import _rows
    labels = set(yamnet.class_names())
    assert set(_rows()) <= labels
    assert third_person("open and close") == "opens and closes" and third_person("coo") == "coos"
    assert present_participle("whir") == "whirring" and present_participle("sizzle in a pan") == "sizzling in a pan"
    assert entry("Bark", 70).sentence() == "a dog barks" and entry("Bark", 70).family == entry("Dog", 69).family
    assert entry("Thump, thud", 454).sentence() == "a thud"
    assert entry("Jazz", 230).noun == "jazz" and entry("Jazz", 230).generic


def _scene(labels, tracks: dict[str, list[float]], wave=None, transcript=None, n=9):
    probs = np.full((n, len(labels)), 0.01, dtype=np.float32)
    for name, track in tracks.items():
        probs[:, labels.index(name)] = track
    wave = wave if wave is not None else 0.05 * np.random.default_rng(0).standard_normal(SR * 5).astype(np.float32)
    return composer.Scene(labels=labels, patch_probs=probs, descriptors=describe(wave), transcript=transcript)


@pytest.fixture(scope="module")
def labels():
    from core.models import yamnet
    return yamnet.class_names()


def test_composer_merges_synonyms_drops_filler_and_generic_parents(labels):
    bursts = [0.9, 0.05, 0.05, 0.9, 0.05, 0.05, 0.05, 0.05, 0.05]          # two separate barks
    scene = _scene(labels, {"Dog": bursts, "Bark": bursts, "Bow-wow": [b * 0.8 for b in bursts],
                            "Animal": bursts, "Domestic animals, pets": bursts,
                            "Traffic noise, roadway noise": [0.6] * 9, "Inside, small room": [0.9] * 9,
                            "Silence": [0.5] * 9})
    out = composer.compose(scene, seed=1)
    text = out.caption
    assert text.count("dog") == 1, text                     # Dog / Bark / Bow-wow said once
    assert "traffic" in text and "room" not in text and "silence" not in text and "animal" not in text, text
    assert ("twice" in text or "two times" in text), text  # the two bursts
    assert out.tags["Dog"] > 0.4 and out.events[0] == "dog" and 0 < out.confidence <= 1


def test_composer_varies_wording_but_is_deterministic(labels):
    scene = _scene(labels, {"Blender": [0.8] * 9, "Speech": [0.3] * 9})
    texts = {composer.compose(scene, seed=s).caption for s in range(12)}
    assert len(texts) >= 3 and all("blender" in t for t in texts)
    assert composer.compose(scene, seed=5).caption == composer.compose(scene, seed=5).caption


def test_composer_quotes_believable_speech_only(labels):
    from core.models.teachers.speech import Transcript
    said = _scene(labels, {"Speech": [0.9] * 9}, transcript=Transcript("Turn left at the lights.", 0.8, 0.05))
    assert '"turn left at the lights"' in composer.compose(said, seed=0).caption
    shaky = _scene(labels, {"Speech": [0.9] * 9}, transcript=Transcript("Speedo.", 0.2, 0.7))
    assert '"' not in composer.compose(shaky, seed=0).caption


def test_composer_silence_is_the_whole_story(labels):
    quiet = 1e-5 * np.random.default_rng(1).standard_normal(SR * 3).astype(np.float32)
    scene = _scene(labels, {"Silence": [0.9] * 5, "Inside, small room": [0.4] * 5}, wave=quiet, n=5)
    text = composer.compose(scene, seed=0).caption
    assert "silence" in text and "Inside" not in text


# -- the embedded teacher on real audio ----------------------------------------------------------
@pytest.fixture(scope="module")
def embedded():
    from core.models.teachers.embedded import EmbeddedTeacher
    return EmbeddedTeacher()


def test_embedded_captions_real_animals(embedded, shared_data):
    from core.store import audio
    names = ["dog", "cow", "rooster", "sheep"]
    waves = [audio.decode(shared_data / "ovos_animals" / "audio" / f"{n}.flac")[0] for n in names]
    outs = embedded.caption(waves)
    assert len(outs) == 4
    for name, out in zip(names, outs):
        assert out.teacher == "embedded" and out.prompt == composer.VERSION and out.model.startswith("yamnet")
        assert out.caption and out.caption == out.caption.strip() and 0 <= out.confidence <= 1
        assert all(isinstance(v, float) for v in out.tags.values()) and out.extra["descriptors"]["duration"] > 0
    assert "dog" in outs[0].caption and "cow" in outs[1].caption
    assert "chicken" in outs[2].caption or "rooster" in outs[2].caption
    assert embedded.caption(waves[:1])[0].caption == outs[0].caption          # same clip, same words


def test_embedded_runs_whisper_only_where_speech_is_likely(embedded, shared_data, monkeypatch, tmp_path):
    from core.store import audio
    from core.models.teachers import speech
    monkeypatch.setenv("HEARSAY_CACHE", str(tmp_path))        # an empty transcript cache: Whisper must run
    calls = []

    class FakeWhisper:
        def transcribe(self, wave):
            calls.append(len(wave))
            return speech.Transcript("seven", 0.9, 0.05)

    monkeypatch.setattr(speech, "get_transcriber", lambda: FakeWhisper())
    digit = audio.decode(shared_data / "fsdd" / "audio" / "7_jackson_0.flac")[0]
    dog = audio.decode(shared_data / "ovos_animals" / "audio" / "dog.flac")[0]
    outs = embedded.caption([dog, digit, tone(2.0)])
    assert calls == [len(digit)]
    assert '"seven"' in outs[1].caption and outs[1].extra["transcript"] == "seven"


def test_transcripts_are_cached_by_content(shared_data, monkeypatch, tmp_path):
    """The teacher and the student both listen to a speech clip: Whisper hears it once, a corrupt
    cache entry is heard again, and a different wave is a different entry."""
    from core.store import audio
    from core.models.teachers import speech
    monkeypatch.setenv("HEARSAY_CACHE", str(tmp_path))
    calls = []

    class FakeWhisper:
        def transcribe(self, wave):
            calls.append(len(wave))
            return speech.Transcript("seven", 0.9, 0.05) if len(wave) > 100 else None

    monkeypatch.setattr(speech, "get_transcriber", lambda: FakeWhisper())
    digit = audio.decode(shared_data / "fsdd" / "audio" / "7_jackson_0.flac")[0]
    first = speech.cached_transcript(digit)
    assert speech.cached_transcript(digit.copy()) == first == speech.Transcript("seven", 0.9, 0.05)
    assert len(calls) == 1
    assert speech.cached_transcript(digit[:50]) is None and speech.cached_transcript(digit[:50]) is None
    assert len(calls) == 2                                     # "no words" is remembered too
    entry, = (tmp_path / "transcripts").rglob(f"{speech.wave_key(digit)}.json")
    entry.write_text("{not json")
    assert speech.cached_transcript(digit) == first and len(calls) == 3
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("HEARSAY_CACHE", str(blocked))          # an unwritable cache: heard, not lost
    assert speech.cached_transcript(digit) == first and len(calls) == 4


def test_real_whisper_hears_a_spoken_digit(shared_data):
    from core.store import audio
    from core.models.teachers.speech import get_transcriber
    t = get_transcriber().transcribe(audio.decode(shared_data / "fsdd" / "audio" / "0_lucas_10.flac")[0])
    assert t is not None and "zero" in t.text.lower()


# -- transformers: a tiny random Qwen2-Audio, no download ---------------------------------------
@pytest.fixture(scope="module")
def tiny_qwen2_audio():
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, WhisperFeatureExtractor)

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]
    words = "system user assistant you are a helpful describe the sound briefly audio 1 : . dog barks".split()
    vocab = {t: i for i, t in enumerate(specials + ["[UNK]"] + sorted(set(words)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="<|endoftext|>",
                                        eos_token="<|im_end|>", additional_special_tokens=specials[1:])
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer)
    config = Qwen2AudioConfig(
        audio_config=dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          num_mel_bins=128),
        text_config=dict(model_type="qwen2", vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=2048),
        audio_token_index=vocab["<|AUDIO|>"])
    torch.manual_seed(0)
    return Qwen2AudioForConditionalGeneration(config).eval(), processor


def test_transformers_teacher_prompt_batching_and_provenance(tiny_qwen2_audio):
    from core.models.teachers.transformers_llm import TransformersTeacher, model_class
    model, processor = tiny_qwen2_audio
    teacher = TransformersTeacher(model=model, processor=processor, model_id="tiny-qwen2-audio",
                                  prompt="Describe the sound briefly.", max_new_tokens=4, batch_size=2)
    text = teacher.prompt_text()
    assert "<|audio_bos|><|AUDIO|><|audio_eos|>" in text and "Describe the sound briefly." in text
    assert text.endswith("<|im_start|>assistant\n")

    waves = [np.zeros(SR, np.float32), 0.1 * np.ones(SR // 2, np.float32)]
    batch = teacher.inputs(waves)
    assert batch["input_features"].shape == (2, 128, 3000)
    audio_id = processor.audio_token_id
    n_audio = (batch["input_ids"] == audio_id).sum(dim=1).tolist()
    assert n_audio == [25, 12]          # per clip, from its own length: 100 mel frames → 25 tokens, 50 → 12
    assert (batch["input_ids"][:, -1] == batch["input_ids"][0, -1]).all()   # left padded: prompts end together
    assert batch["attention_mask"][1, 0] == 0

    calls = []
    original = model.generate
    model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or original(**kw)
    try:
        outs = teacher.caption([np.random.default_rng(i).standard_normal(SR).astype(np.float32) * 0.1
                                for i in range(3)])
    finally:
        model.generate = original
    assert calls == [2, 1]                                      # batched by batch_size
    assert len(outs) == 3 and all(o.teacher == "transformers" and o.model == "tiny-qwen2-audio" for o in outs)
    assert all(o.prompt == "Describe the sound briefly." and 0 <= o.confidence <= 1 for o in outs)
    assert model_class("qwen2_audio").__name__ == "Qwen2AudioForConditionalGeneration"
    assert model_class("qwen2_5_omni").__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"


# -- openai-compatible: a real server on 127.0.0.1 ----------------------------------------------
class ChatServer:
    """Speaks enough of chat-completions: checks the key and the input_audio part, answers with the
    clip's duration; scripted failures (429 with Retry-After, 503, a permanent 400) by clip length."""

    def __init__(self, key: str):
        self.key, self.requests, self.in_flight, self.max_in_flight = key, [], 0, 0
        self.failures: dict[int, list[int]] = {}        # samples → statuses to answer before succeeding
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer()
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions" or self.headers.get("Authorization") != f"Bearer {server.key}":
                    return self._send(401, {"error": "bad key or path"})
                parts = body["messages"][0]["content"]
                audio = next(p["input_audio"] for p in parts if p["type"] == "input_audio")
                prompt = next(p["text"] for p in parts if p["type"] == "text")
                wave, sr = sf.read(io.BytesIO(base64.b64decode(audio["data"])), dtype="float32")
                server.requests.append((len(wave), sr, audio["format"], prompt, body["model"]))
                time.sleep(0.05)
                with server.lock:
                    script = server.failures.get(len(wave), [])
                    status = script.pop(0) if script else 200
                if status != 200:
                    return self._send(status, {"error": "scripted"}, {"Retry-After": "0"} if status == 429 else {})
                self._send(200, {"choices": [{"message": {"role": "assistant",
                                                          "content": f" A tone of {len(wave) / sr:.1f} seconds. "}}]})

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    server = ChatServer(key="sk-test-123")
    yield server
    server.close()


def test_openai_compatible_teacher_retries_and_isolates_failures(chat_server, settings, monkeypatch):
    from core.models.teachers.openai_compat import OpenAICompatTeacher, TeacherHTTPError
    monkeypatch.setenv("HEARSAY_OPENAI_API_KEY", "sk-test-123")
    teacher = OpenAICompatTeacher(settings, base_url=chat_server.url, model="qwen2-audio", concurrency=2,
                                  max_retries=3, backoff=0.01, timeout=10)
    waves = [tone(1.0), tone(1.5), tone(2.0), tone(0.5), tone(2.5)]
    chat_server.failures = {16000: [429, 503], 8000: [400]}          # 1.0 s: retried twice; 0.5 s: never works
    outs = teacher.caption_each(waves)
    assert [o.caption for o in outs if isinstance(o, TeacherOutput)] == \
        ["A tone of 1.0 seconds.", "A tone of 1.5 seconds.", "A tone of 2.0 seconds.", "A tone of 2.5 seconds."]
    assert isinstance(outs[3], TeacherHTTPError) and outs[3].status == 400
    tries = [r[0] for r in chat_server.requests]
    assert tries.count(16000) == 3 and tries.count(8000) == 1          # 429 + 503 retried, 400 not
    assert all(sr == SR and fmt == "wav" and model == "qwen2-audio" for _, sr, fmt, _, model in chat_server.requests)
    assert chat_server.max_in_flight <= 2                               # the concurrency cap holds
    ok = outs[0]
    assert ok.teacher == "openai-compatible" and ok.model == "qwen2-audio" and ok.prompt == teacher.prompt
    assert "sk-test" not in json.dumps(ok.__dict__, default=str)        # the key never travels with a caption


def test_openai_compatible_gives_up_after_retries(chat_server, settings):
    from core.models.teachers.openai_compat import OpenAICompatTeacher, TeacherHTTPError
    teacher = OpenAICompatTeacher(settings, base_url=chat_server.url, model="m", api_key="sk-test-123",
                                  max_retries=1, backoff=0.01)
    chat_server.failures = {16000: [500, 500, 500]}
    with pytest.raises(TeacherHTTPError, match="HTTP 500"):
        teacher.caption([tone(1.0)])
    assert len(chat_server.requests) == 2
    wrong_key = OpenAICompatTeacher(settings, base_url=chat_server.url, model="m", api_key="wrong", max_retries=3)
    with pytest.raises(TeacherHTTPError, match="HTTP 401"):
        wrong_key.caption([tone(0.3)])
