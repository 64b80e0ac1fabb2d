"""Tiny randomly initialised parts for a combined student, built from configs (tests, benchmarks; no downloads):
a wav2vec2-style audio encoder folder and a sentence-transformers folder (BERT + mean pooling)."""
from __future__ import annotations

from pathlib import Path

from training.clap_configs import WORDS


def build_audio_encoder_folder(folder: str | Path, kind: str = "wav2vec2", seed: int = 0) -> Path:
    """A tiny random audio encoder + its feature extractor: `wav2vec2` (three conv layers, 400 samples per
    frame, two transformer layers), `ast` (32 mel bins, 128 frames) or `whisper` (one 16-wide layer each side)."""
    import torch
    from transformers import (ASTConfig, ASTFeatureExtractor, ASTModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor,
                              Wav2Vec2Model, WhisperConfig, WhisperFeatureExtractor, WhisperModel)

    from core.models.clap_student import _quiet_transformers
    _quiet_transformers()
    torch.manual_seed(seed)
    folder = Path(folder)
    if kind == "wav2vec2":
        model = Wav2Vec2Model(Wav2Vec2Config(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(16, 16, 16),
            conv_stride=(10, 8, 5), conv_kernel=(10, 8, 5), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
            feat_extract_norm="layer", do_stable_layer_norm=True, mask_time_prob=0.0))
        features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True,
                                            return_attention_mask=True)
    elif kind == "ast":
        model = ASTModel(ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                   max_length=128, num_mel_bins=32))
        features = ASTFeatureExtractor(num_mel_bins=32, max_length=128)
    elif kind == "whisper":
        model = WhisperModel(WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                           vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                           decoder_start_token_id=1))
        features = WhisperFeatureExtractor()
    else:
        raise ValueError(f"unknown encoder kind {kind!r}: wav2vec2, ast or whisper")
    model.save_pretrained(folder)
    features.save_pretrained(folder)
    return folder


def build_sentence_folder(folder: str | Path, seed: int = 0) -> Path:
    """A sentence-transformers model: a one-layer 16-wide BERT over a small word list, mean pooling."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast
    torch.manual_seed(seed)
    folder = Path(folder)
    bert = folder.with_name(folder.name + "-bert")
    bert.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(bert / "vocab.txt"), model_max_length=64).save_pretrained(bert)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(bert)
    transformer = models.Transformer(str(bert), max_seq_length=32)
    SentenceTransformer(modules=[transformer, models.Pooling(16, "mean")], device="cpu").save(str(folder))
    return folder
