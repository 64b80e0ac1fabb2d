"""Randomly initialised CLAP folders built from configs, for tests and benchmarks (nothing is downloaded).

- `tiny`: ~10k parameters, 16 kHz / 16 mel bins / 2 s windows, a word-level tokenizer: trains in
  seconds on a CPU, so tests run train → save → load → index → search → evaluate end to end;
- `real`: the laion/clap-htsat-unfused architecture (HTSAT + RoBERTa-base, 48 kHz, 10 s windows) with
  random weights and the tiny tokenizer: real compute and memory per clip, no hub access.

The folder is what `core.models.clap_student.ClapStudent.from_pretrained` reads (config.json, model.safetensors,
preprocessor_config.json, tokenizer files).
"""
from __future__ import annotations

from pathlib import Path

WORDS = ("a an the of and with in on at to sound sounds steady tone hertz low high hum dog dogs bark barks "
         "barking cat meows bird sings chirps car engine rain water running door knock speech man woman "
         "talking music piano guitar siren wind noise loud quiet short long").split()


def tiny_tokenizer(max_length: int = 64):
    """A RoBERTa-shaped word-level tokenizer (<s>=0, <pad>=1, </s>=2, <unk>=3) over a small vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=max_length)


def clap_parts(size: str = "tiny", seed: int = 0):
    """(ClapModel, ClapFeatureExtractor, tokenizer) with random weights."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel
    torch.manual_seed(seed)
    if size == "tiny":
        config = ClapConfig(
            text_config=dict(vocab_size=len(WORDS) + 4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=40, projection_dim=16),
            audio_config=dict(spec_size=64, window_size=4, num_mel_bins=16, patch_size=4, patch_stride=(4, 4),
                              depths=[1, 1], num_attention_heads=[1, 2], patch_embeds_hidden_size=8, hidden_size=16,
                              num_hidden_layers=2, projection_dim=16),
            projection_dim=16)
        features = ClapFeatureExtractor(feature_size=16, sampling_rate=16_000, hop_length=160, max_length_s=2,
                                        fft_window_size=400, frequency_max=8_000)
    elif size == "real":           # laion/clap-htsat-unfused's shapes (the defaults), vocabulary aside
        config = ClapConfig(text_config=dict(vocab_size=len(WORDS) + 4))
        features = ClapFeatureExtractor()
    else:
        raise ValueError(f"unknown size {size!r}: tiny or real")
    return ClapModel(config), features, tiny_tokenizer()


def build_clap_folder(folder: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random CLAP (see the module docstring) as a Hugging Face folder; returns it."""
    from core.models.clap_student import _quiet_transformers
    _quiet_transformers()
    folder = Path(folder)
    model, features, tokenizer = clap_parts(size, seed)
    model.save_pretrained(folder)
    features.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
