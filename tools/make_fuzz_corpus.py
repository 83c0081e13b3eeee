#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets in tests/fuzz/ (one folder per target, named
as the target without its fuzz_ prefix). Every seed is small (well under 20 kB) and generated
here, so the fuzzers start from inputs that get past the first checks:

tests/fuzz/corpus/hf_config/     the config.json fixtures of tests/fixtures/configs/ (Llama, Llama 3
                                 RoPE, Qwen2 with and without a sliding window, Mistral; 4.x and
                                 5.x layouts), Qwen2 windowed through max_window_layers, and
                                 configs whose weight count overflows size_t
tests/fuzz/corpus/llama2c/       tiny v0 checkpoints: shared and unshared classifier, grouped-query
                                 attention, two layers; a NaN weight; an 'ak42' export; a header
                                 whose arrays the file does not hold
tests/fuzz/corpus/result_store/  stores under the fuzzer's fingerprint: header only, records, an
                                 override, a torn last line, nested and non-ASCII values
tests/fuzz/corpus/tokenizer/     one seed per mode of fuzz_tokenizer (the first byte, mod 4):
                                 '0' encode and '1' encode_ordinary text, '2' a tokenizer.bin,
                                 '3' a tokenizer.json
(tests/fuzz/corpus/safetensors_header/ comes from tools/make_safetensors_fixtures.py.)

Usage: python3 tools/make_fuzz_corpus.py   (from anywhere; standard library only, plus
Debian's libxxhash for the result-store record checksums; the outputs are committed).
"""
import ctypes
import json
import math
import random
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
CONFIG_FIXTURES = ROOT / "tests" / "fixtures" / "configs"
MAX_SEED_BYTES = 20_000

# Must match kFingerprint in tests/fuzz/fuzz_result_store.cpp.
RESULT_STORE_FINGERPRINT = "fuzz-fingerprint"
RESULT_STORE_VERSION = 2


def fresh(name):
    d = CORPUS / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def write(d, name, data):
    assert len(data) < MAX_SEED_BYTES, f"{name}: {len(data)} bytes"
    (d / name).write_bytes(data)


# --- hf_config -------------------------------------------------------------------------------

def hf_config():
    d = fresh("hf_config")
    for cfg in sorted(CONFIG_FIXTURES.glob("*/config.json")):
        write(d, cfg.parent.name + ".json", cfg.read_bytes())
    # Qwen2 windowed from max_window_layers on, with no layer_types list (4.x layout).
    qwen2_window_layers = {
        "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 172,
        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
        "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "use_sliding_window": True, "sliding_window": 16,
        "max_window_layers": 1, "torch_dtype": "bfloat16", "tie_word_embeddings": True,
    }
    write(d, "qwen2_max_window_layers.json", json.dumps(qwen2_window_layers, indent=2).encode())
    # Inputs the fuzzer trapped on: dimensions whose products wrap in size_t (q_dim, then the
    # weight count) were accepted; ModelConfig::validate now refuses them.
    tiny_llama = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
                  "num_hidden_layers": 4, "num_attention_heads": 8, "vocab_size": 512,
                  "max_position_embeddings": 256, "rms_norm_eps": 1e-05}
    write(d, "q_dim_overflow.json", json.dumps(
        {**tiny_llama, "num_attention_heads": 2**32, "head_dim": 2**32}).encode())
    write(d, "weight_count_overflow.json", json.dumps(
        {**tiny_llama, "vocab_size": 2**64 - 1}).encode())


# --- llama2c ---------------------------------------------------------------------------------

def llama2c_checkpoint(rng, dim, hidden, layers, heads, kv_heads, vocab, seq, shared=True):
    """A v0 checkpoint: 7 int32 then the float32 arrays in llama2.c's export order."""
    hs = dim // heads
    counts = [vocab * dim, layers * dim, layers * dim * dim, 2 * layers * kv_heads * hs * dim,
              layers * dim * dim, layers * dim, 3 * layers * hidden * dim, dim, seq * hs]
    if not shared:
        counts.append(vocab * dim)
    floats = [rng.uniform(-1.0, 1.0) for _ in range(sum(counts))]
    header = struct.pack("<7i", dim, hidden, layers, heads, kv_heads,
                         vocab if shared else -vocab, seq)
    return header + struct.pack(f"<{len(floats)}f", *floats)


def llama2c():
    d = fresh("llama2c")
    rng = random.Random(260)
    write(d, "shared_1layer.bin", llama2c_checkpoint(rng, 8, 16, 1, 2, 2, 16, 4))
    write(d, "unshared_1layer.bin", llama2c_checkpoint(rng, 8, 12, 1, 2, 2, 12, 2, shared=False))
    write(d, "gqa_2layers.bin", llama2c_checkpoint(rng, 8, 16, 2, 4, 2, 10, 3))
    nan = bytearray(llama2c_checkpoint(rng, 4, 4, 1, 1, 1, 4, 1))
    nan[28:32] = struct.pack("<f", math.nan)  # the first embedding weight
    write(d, "nan_weight.bin", bytes(nan))
    write(d, "versioned_ak42.bin",
          struct.pack("<I", 0x616B3432) + struct.pack("<6i", 1, 8, 16, 1, 2, 2))
    write(d, "header_only.bin", struct.pack("<7i", 8, 16, 1, 2, 2, 16, 4))


# --- result_store ----------------------------------------------------------------------------

_xxh3 = None


def xxh3_64(data):
    global _xxh3
    if _xxh3 is None:
        _xxh3 = ctypes.CDLL("libxxhash.so.0").XXH3_64bits
        _xxh3.restype = ctypes.c_uint64
        _xxh3.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return _xxh3(data, len(data))


def dump(value):
    """nlohmann::json::dump(): compact, object keys sorted, UTF-8 as is."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def store_header(fingerprint=RESULT_STORE_FINGERPRINT):
    return dump({"fragile_result_store": RESULT_STORE_VERSION, "fingerprint": fingerprint}) + "\n"


def store_record(key, value):
    # ResultStore's checksum: XXH3-64 of the key, a NUL, and the dumped value.
    digest = xxh3_64(key.encode() + b"\0" + dump(value).encode())
    return dump({"key": key, "value": value, "xxh3": f"{digest:016x}"}) + "\n"


def result_store():
    d = fresh("result_store")
    write(d, "header_only.jsonl", store_header().encode())
    write(d, "layers.jsonl", (store_header()
                              + store_record("model.layers.0.self_attn.q_proj", {"V": 0.25})
                              + store_record("model.layers.0.self_attn.k_proj", {"V": -0.5})
                              + store_record("model.layers.0.mlp.down_proj", {"V": 1.5, "n": 3})
                              ).encode())
    write(d, "override.jsonl", (store_header() + store_record("a", 1) + store_record("b", [1, 2])
                                + store_record("a", 2)).encode())
    write(d, "torn_tail.jsonl", (store_header() + store_record("a", 1)
                                 + '{"key":"b","val').encode())
    write(d, "nested.jsonl", (store_header()
                              + store_record("map", {"bits": [3, 4, 8], "ok": True, "none": None,
                                                     "deep": {"x": {"y": "z"}}})
                              + store_record("héllo €", "ünïcode")).encode())
    write(d, "other_fingerprint.jsonl", (store_header("stories260K|rtn3g32|seed0")
                                         + store_record("a", 1)).encode())


# --- tokenizer -------------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's byte -> printable-symbol table (what ByteLevel stores in vocab and merges)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def symbols(text):
    table = bytes_to_unicode()
    raw = text if isinstance(text, bytes) else text.encode()
    return "".join(table[b] for b in raw)


def tokenizer_json():
    vocab = {symbols(bytes([b])): b for b in range(256)}
    merges = []
    for a, b in [(" ", "t"), (" t", "h"), (" th", "e"), ("i", "n"), ("in", "g"), ("e", "r"),
                 ("l", "l"), ("ll", "o"), ("H", "e"), ("He", "llo")]:
        merges.append(f"{symbols(a)} {symbols(b)}")
        vocab[symbols(a + b)] = len(vocab)
    return json.dumps({
        "version": "1.0",
        "added_tokens": [{"id": len(vocab), "content": "<|end|>", "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": r"\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+"},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }, ensure_ascii=False, separators=(",", ":")).encode()


def tokenizer_bin():
    """llama2.c tokenizer.bin: max_token_length, then (score f32, length i32, bytes) per token."""
    pieces = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)]
    pieces += [(f"<0x{b:02X}>", 0.0) for b in range(256)]
    merged = [" ", "a", "b", "h", "l", "o", "é", " a", " b", "he", "ll", "llo", "hello", " hé", "€"]
    pieces += [(p, -float(i)) for i, p in enumerate(merged)]
    encoded = [(p.encode(), s) for p, s in pieces]
    out = struct.pack("<i", max(len(p) for p, _ in encoded))
    for p, s in encoded:
        out += struct.pack("<fi", s, len(p)) + p
    return out


def tokenizer():
    d = fresh("tokenizer")
    # fuzz_tokenizer picks its mode from the first byte mod 4: '0'..'3' are 48..51.
    write(d, "bpe_encode.txt", "0 the thing is singing<|end|>x <héllo> 1234\n\n  aaaa's".encode())
    write(d, "bpe_encode_ordinary.txt", "1 the<|end|> there  \ttherein €12".encode())
    write(d, "bpe_invalid_utf8.txt", b"0 the \xff\xfe thing \xc3")
    write(d, "llama2c_tokenizer.bin", b"2" + tokenizer_bin())
    write(d, "tokenizer.json", b"3" + tokenizer_json())


def main():
    hf_config()
    llama2c()
    result_store()
    tokenizer()
    print(f"wrote {CORPUS}/{{hf_config,llama2c,result_store,tokenizer}}")


if __name__ == "__main__":
    main()
