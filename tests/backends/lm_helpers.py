"""Checks every backend's language-model artifact must pass (tiny-llama, fp32)."""
import numpy as np

from edge.artifact import load_artifact
from edge.backends import get_backend
from edge.models.llama import greedy


def check_lm_artifact(art, spec, prefill_mode: str, cache: str, kv_dtype: str = "float32") -> None:
    m = art.manifest
    cfg = spec.generation.config
    gen = m["generation"]
    elem = np.dtype(kv_dtype).itemsize
    assert (gen["prefill_tokens"], gen["context"], gen["prefill_mode"], gen["cache"]) == (32, 128, prefill_mode, cache)
    assert gen["kv_cache"]["bytes"] == cfg.kv_cache_bytes(elem) == 2 * 2 * 2 * 128 * 24 * elem
    assert gen["kv_cache"]["shape"] == [2, 2, 2, 128, 24] and gen["kv_cache"]["dtype"] == kv_dtype
    val = m["validation"]
    # fp32: greedy tokens identical to eager, logits per decode step equal, perplexity unchanged
    assert val["passed"] and val["precision"] == "fp32" and val["token_agreement"] == 1.0
    assert val["decode_steps"] == 16 * 32 and val["min_step_cosine"] > 0.9999
    assert abs(val["ppl_candidate"] / val["ppl_reference"] - 1) < 1e-3
    eager, _ = greedy(spec.model, spec.generation.prompt, 32)
    assert gen["reference"]["eager_tokens"] == gen["reference"]["host_tokens"] == eager
    # the sample prompt ships as token ids; the device needs no tokenizer
    with np.load(art.dir / "sample_inputs.npz") as data:
        assert data["arr_0"].tolist() == spec.generation.prompt[0].tolist()
    # a fresh generator from the published folder continues a shorter prompt as eager does
    generator = get_backend(m["backend"]).load_generator(load_artifact(art.dir))
    prompt = spec.generation.prompt[0, :20].tolist()
    logits = generator.prefill(prompt)
    tokens = [int(np.argmax(logits))]
    for pos in range(20, 30):
        tokens.append(int(np.argmax(generator.decode(tokens[-1], pos))))
    assert tokens == greedy(spec.model, spec.generation.prompt[:, :20], 11)[0]
