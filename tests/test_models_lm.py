"""Language models: the cached Llama decoder, tiny-llama, Hugging Face decoders, smollm2-135m."""
import json

import pytest
import torch

from edge.errors import ModelLoadError
from edge.models import load_model
from edge.models.llama import Llama, LlamaConfig, greedy, load_hf_state_dict

SMALL = LlamaConfig(vocab=64, dim=32, layers=2, heads=4, kv_heads=2, ffn=48, prefill_tokens=8, context=24)


def test_kv_cache_bytes_is_layers_x_2_x_kv_heads_x_context_x_head_dim_x_bytes():
    # SmolLM2-135M at context 512, fp32: 30 x 2 x 3 x 512 x 64 x 4 = 23.6 MB
    cfg = LlamaConfig(vocab=49152, dim=576, layers=30, heads=9, kv_heads=3, ffn=1536, context=512)
    assert cfg.head_dim == 64
    assert cfg.kv_cache_bytes() == 30 * 2 * 3 * 512 * 64 * 4 == 23_592_960
    assert cfg.kv_cache_bytes(2) == cfg.kv_cache_bytes() // 2


def test_cached_step_matches_the_full_sequence_forward():
    torch.manual_seed(0)
    model = Llama(SMALL).eval()
    tokens = torch.randint(0, SMALL.vocab, (1, 20))
    with torch.no_grad():
        full = model(tokens)
        k, v = model.empty_cache()
        first, k, v = model.step(tokens[:, :8], torch.tensor([0]), k, v)  # prefill 8
        steps = [first]
        for i in range(8, 20):  # then one token at a time
            logits, k, v = model.step(tokens[:, i:i + 1], torch.tensor([i]), k, v)
            steps.append(logits)
    assert torch.allclose(full, torch.cat(steps, 1), atol=1e-5)
    # the cache holds exactly the 20 written positions; later slots stay zero
    assert k.shape == SMALL.cache_shape() and k[:, :, 20:].abs().sum() == 0 and k[:, :, :20].abs().sum() > 0


def test_architecture_matches_hugging_face_llama_with_grouped_query_attention():
    from transformers import LlamaConfig as HFConfig, LlamaForCausalLM

    torch.manual_seed(1)
    hf_cfg = HFConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rope_theta=500.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, max_position_embeddings=64)
    hf = LlamaForCausalLM(hf_cfg).eval()
    ours = load_hf_state_dict(Llama(LlamaConfig(vocab=64, dim=32, layers=2, heads=4, kv_heads=2, ffn=48,
                                                rope_base=500.0, norm_eps=1e-6, tie_embeddings=True)),
                              hf.state_dict()).eval()
    tokens = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        assert torch.allclose(hf(tokens).logits, ours(tokens), atol=1e-4)
    assert ours.lm_head.weight is ours.embed_tokens.weight  # tied, as in the checkpoint


def test_tiny_llama_is_a_trained_byte_model_that_writes_english_letters():
    spec = load_model("tiny-llama")
    gen = spec.generation
    assert gen.config.prefill_tokens == 32 and gen.config.context == 128 and gen.prompt.shape == (1, 32)
    assert spec.summary()["generation"]["kv_cache_bytes_fp32"] == 2 * 2 * 2 * 128 * 24 * 4
    assert bytes(gen.prompt[0].tolist()).decode("utf-8").startswith("The Legend of Sleepy Hollow")
    tokens, _ = greedy(spec.model, gen.prompt, 40)
    text = bytes(tokens).decode("utf-8", errors="replace")
    assert sum(c.isalpha() or c == " " for c in text) >= 36, text  # trained, not random bytes
    # perplexity on held-out text far below the 256 of a uniform byte model
    from edge.evaluate import perplexity_of

    with torch.no_grad():
        logits = [spec.model(x[0]).numpy() for x in spec.eval_inputs]
    assert perplexity_of(logits, spec.eval_inputs) < 12


def test_eval_and_calibration_text_can_be_replaced(tmp_path, monkeypatch):
    from edge.models.lm import tiny_llama

    text = tmp_path / "mine.txt"
    text.write_text("All work and no play makes Jack a dull boy. " * 40)
    monkeypatch.setenv("EDGE_EVAL_TEXT", str(text))
    spec = tiny_llama()
    assert bytes(spec.eval_inputs[0][0][0].tolist()).decode().startswith("All work and no play")
    short = tmp_path / "short.txt"
    short.write_text("too short")
    monkeypatch.setenv("EDGE_EVAL_TEXT", str(short))
    with pytest.raises(ModelLoadError, match="evaluation text has 9 tokens, expected at least 512"):
        tiny_llama()
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9 " * 200)
    monkeypatch.setenv("EDGE_EVAL_TEXT", str(bad))
    with pytest.raises(ModelLoadError, match="expected UTF-8 text"):
        tiny_llama()


def test_a_decoder_directory_that_is_not_llama_shaped_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "n_embd": 8}))
    with pytest.raises(ModelLoadError, match="expected a decoder with the Llama block structure"):
        load_model(str(tmp_path))


def test_missing_gguf_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="expected a .gguf file"):
        load_model(str(tmp_path / "nothing.gguf"))


@pytest.mark.slow
def test_smollm2_is_the_real_pretrained_model_loaded_offline():
    """The shipped GGUF, dequantized once into edge's model cache, completes a fact."""
    spec = load_model("smollm2-135m")
    cfg = spec.generation.config
    assert (cfg.layers, cfg.dim, cfg.heads, cfg.kv_heads, cfg.ffn, cfg.vocab) == (30, 576, 9, 3, 1536, 49152)
    assert cfg.tie_embeddings and spec.num_params() == 134_515_008
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.generation.tokenizer["path"])
    ids = tok.encode("The capital of France is", add_special_tokens=False)
    out, _ = greedy(spec.model, torch.tensor([ids]), 3)
    assert "Paris" in tok.decode(out)
    # the same file given by path is a user's own .gguf: same weights, named after the file
    from edge.models.lm import smollm2_gguf

    user = load_model(str(smollm2_gguf()))
    assert user.name == "SmolLM2-135M-Instruct.Q4_1" and user.source.endswith(".gguf")
    assert torch.equal(user.model.layers[7].ffn.up_proj.weight, spec.model.layers[7].ffn.up_proj.weight)


def _hf_decoder_dir(path, arch: str):
    """A tiny random Hugging Face decoder directory with a byte-level tokenizer, as save_pretrained writes it."""
    from transformers import LlamaConfig as HFLlama, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from edge.models.lm import write_byte_tokenizer

    torch.manual_seed(2)
    common = dict(vocab_size=256, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
    model = (Qwen2ForCausalLM(Qwen2Config(**common, rope_theta=1e6)) if arch == "qwen2"
             else LlamaForCausalLM(HFLlama(**common, rope_theta=1e4)))
    model.save_pretrained(str(path))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(write_byte_tokenizer(path / "bytes.json")),
                                  bos_token="\x01", eos_token="\x02")
    tok.save_pretrained(str(path))
    return model.eval()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_hugging_face_decoder_directory_loads_as_a_language_model(tmp_path, arch):
    hf = _hf_decoder_dir(tmp_path / arch, arch)
    spec = load_model(str(tmp_path / arch))
    assert spec.generation is not None and spec.metric == "perplexity" and spec.name == arch
    assert spec.generation.config.qkv_bias == (arch == "qwen2")
    prompt = spec.generation.prompt[:, :16]
    with torch.no_grad():
        assert torch.allclose(hf(prompt).logits, spec.model(prompt), atol=1e-4)
        want = hf.generate(prompt, max_new_tokens=12, do_sample=False, min_new_tokens=12)[0, 16:].tolist()
    assert greedy(spec.model, prompt, 12)[0] == want
    # the evaluation windows are the shipped text through the directory's own tokenizer
    assert bytes(spec.eval_inputs[0][0][0].tolist()).decode().startswith("The Legend of Sleepy Hollow")


def test_scaled_rope_is_refused_with_the_reason(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 1,
        "intermediate_size": 48, "vocab_size": 256, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}))
    with pytest.raises(ModelLoadError, match="scaled RoPE"):
        load_model(str(tmp_path))
