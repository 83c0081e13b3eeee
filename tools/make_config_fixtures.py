#!/usr/bin/env python3
"""Writes the HF config.json fixtures of tests/fixtures/configs/ with transformers' own config
classes and save_pretrained (configs only, no weights), plus expected.json: the values the
installed transformers derives for each (num_key_value_heads, head_dim, rope, sliding window...),
which tests/model/test_hf_config.cpp compares fragile's reader against.

    python3 tools/make_config_fixtures.py [--out tests/fixtures/configs]
"""
import argparse
import json
import pathlib

import transformers
from transformers import LlamaConfig, MistralConfig, Qwen2Config

TINY = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=4, num_attention_heads=8,
            vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-5)


def configs():
    yield "llama_tiny", LlamaConfig(**TINY, num_key_value_heads=4)
    yield "llama_tied_headdim", LlamaConfig(**TINY, num_key_value_heads=2, head_dim=16,
                                           tie_word_embeddings=True, dtype="bfloat16",
                                           rope_theta=500000.0)
    yield "llama3_rope", LlamaConfig(
        **TINY, num_key_value_heads=2, dtype="bfloat16",
        bos_token_id=500, eos_token_id=[501, 502, 503],
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                             low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=128))
    yield "qwen2_tiny", Qwen2Config(**TINY, num_key_value_heads=2, tie_word_embeddings=True,
                                    dtype="bfloat16", rope_theta=1000000.0,
                                    bos_token_id=509, eos_token_id=510)
    yield "qwen2_sliding", Qwen2Config(**TINY, num_key_value_heads=2, use_sliding_window=True,
                                       sliding_window=32, max_window_layers=2)
    yield "mistral_tiny", MistralConfig(**TINY, num_key_value_heads=2, dtype="float16")
    yield "mistral_no_window", MistralConfig(**TINY, num_key_value_heads=2, sliding_window=None)


# Hand-written JSON in the layouts transformers 4.x wrote (top-level rope_theta, rope_scaling,
# torch_dtype) and minimal files that leave every defaultable field out; transformers itself
# then says what each field defaults to.
REQUIRED = dict(TINY)
HAND_WRITTEN = {
    "minimal_llama": (LlamaConfig, dict(model_type="llama", **REQUIRED)),
    # 32 query heads so that Qwen2's class default of 32 KV heads is a valid grouping.
    "minimal_qwen2": (Qwen2Config, dict(model_type="qwen2", **dict(REQUIRED, num_attention_heads=32))),
    "minimal_mistral": (MistralConfig, dict(model_type="mistral", **REQUIRED)),
    "legacy4x_llama3": (LlamaConfig, dict(
        model_type="llama", **REQUIRED, num_key_value_heads=2, torch_dtype="bfloat16",
        rope_theta=500000.0, bos_token_id=500, eos_token_id=[501, 502],
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=64),
        transformers_version="4.45.0")),
    "legacy4x_qwen2": (Qwen2Config, dict(
        model_type="qwen2", **REQUIRED, num_key_value_heads=2, torch_dtype="bfloat16",
        rope_theta=1000000.0, rope_scaling=None, sliding_window=32768, use_sliding_window=False,
        max_window_layers=21, tie_word_embeddings=True, bos_token_id=509, eos_token_id=510,
        transformers_version="4.43.1")),
    "legacy4x_mistral": (MistralConfig, dict(
        model_type="mistral", **REQUIRED, num_key_value_heads=2, torch_dtype="float16",
        rope_theta=1000000.0, sliding_window=None, transformers_version="4.42.0")),
}


def derived(cfg):
    rope = dict(cfg.rope_parameters or {})
    window = getattr(cfg, "sliding_window", None)
    layer_types = getattr(cfg, "layer_types", None)
    first_sliding = None
    if window is not None:
        if layer_types is None:
            first_sliding = 0
        elif "sliding_attention" in layer_types:
            first_sliding = layer_types.index("sliding_attention")
        else:
            window = None
    eos = cfg.eos_token_id
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return dict(
        model_type=cfg.model_type,
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=head_dim,
        vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings,
        rope_theta=rope.get("rope_theta"), rope_type=rope.get("rope_type", "default"),
        rope_factor=rope.get("factor"), rope_low_freq_factor=rope.get("low_freq_factor"),
        rope_high_freq_factor=rope.get("high_freq_factor"),
        rope_original_max_position_embeddings=rope.get("original_max_position_embeddings"),
        sliding_window=window, first_sliding_window_layer=first_sliding,
        dtype=str(cfg.dtype).replace("torch.", "") if cfg.dtype is not None else None,
        bos_token_id=cfg.bos_token_id,
        eos_token_ids=(eos if isinstance(eos, list) else ([eos] if eos is not None else [])),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent.parent /
                                         "tests" / "fixtures" / "configs"))
    out = pathlib.Path(ap.parse_args().out)
    expected = {"transformers_version": transformers.__version__, "configs": {}}
    for name, cfg in configs():
        cfg.save_pretrained(out / name)
        # Re-read what was written, as a user of the saved folder would.
        reread = type(cfg).from_pretrained(out / name)
        expected["configs"][name] = derived(reread)
    for name, (cls, fields) in HAND_WRITTEN.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "config.json").write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
        expected["configs"][name] = derived(cls.from_pretrained(out / name))
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(expected['configs'])} configs to {out}")


if __name__ == "__main__":
    main()
