"""Generation on a device: the runner's --generate mode, edge bench and edge compare for language models."""
import contextlib
import csv
import io
import json
import subprocess
import sys

import pytest

from edge.benchmark import RUNNER_GENERATE_PATH, bench
from edge.cli import main
from edge.errors import ConfigError
from edge.exporter import export
from edge.models import load_model
from edge.models.llama import greedy
from edge.results import ResultsStore

BACKENDS = ["torchscript", "executorch", "tflite"]


@pytest.fixture(scope="module")
def spec():
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def lm_artifacts(spec, tmp_path_factory, artifact_cache):
    out = tmp_path_factory.mktemp("lm-artifacts")
    return {b: export(spec, b, out, cache_dir=artifact_cache) for b in BACKENDS}


def _cli_json(argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([*argv, "--json"])
    return code, json.loads(buf.getvalue())


@pytest.mark.parametrize("backend", BACKENDS)
def test_generation_on_the_local_target_matches_eager(spec, lm_artifacts, backend):
    art = lm_artifacts[backend]
    res = bench(art.path, "local", warmup=1, threads=1, prompt_tokens=20, new_tokens=24)
    gen = res.generation
    assert gen["prompt_tokens"] == 20 and gen["new_tokens"] == 24
    assert gen["tokens"] == greedy(spec.model, spec.generation.prompt[:, :20], 24)[0]
    assert len(res.latencies_ms) == 23 and all(x > 0 for x in res.latencies_ms)  # one per decoded token
    assert gen["ttft_ms"] > 0 and gen["prefill_tok_s"] > 0 and gen["decode_tok_s"] > 0
    assert gen["decode_tok_s"] == pytest.approx(23 / (sum(res.latencies_ms) / 1e3))
    assert gen["prefill_mode"] == art.manifest["generation"]["prefill_mode"]
    assert gen["kv_cache_bytes"] == spec.generation.config.kv_cache_bytes()
    assert 0 < res.baseline_rss_mb < res.peak_rss_mb and gen["model_rss_mb"] > 0
    assert "token_agreement_host" not in gen  # the reference is for the full 32-token prompt only


def test_generation_over_ssh_on_the_lab_device(devicelab, lm_artifacts):
    art = lm_artifacts["executorch"]
    code, out = _cli_json(["bench", str(art.path), "--target", devicelab.names[0], "--targets-file",
                           devicelab.targets_file, "--threads", "1", "--warmup", "0", "--new-tokens", "16"])
    assert code == 0, out
    gen = out["generation"]
    ref = art.manifest["generation"]["reference"]
    assert gen["prompt_tokens"] == 32 and gen["tokens"] == ref["host_tokens"][:16]
    assert gen["token_agreement_host"] == 1.0 and gen["token_agreement_eager"] == 1.0 and gen["tokens_checked"] == 16
    assert out["target"] == devicelab.names[0] and out["context"]["hostname"]


def test_cli_bench_prints_the_generation_figures(lm_artifacts, capsys):
    assert main(["bench", str(lm_artifacts["tflite"].path), "--target", "local", "--threads", "1",
                 "--new-tokens", "8"]) == 0
    text = capsys.readouterr().out
    assert "token-by-token prefill" in text and "time to first token" in text and "decode" in text
    assert "same as the host for 100% of 8" in text


@pytest.mark.parametrize("argv,fragment", [
    (["--prompt-tokens", "33"], "expected --prompt-tokens between 1 and 32"),
    (["--prompt-tokens", "0"], "expected --prompt-tokens between 1 and 32"),
    (["--new-tokens", "97"], "expected --new-tokens between 2 and 96 (context 128 minus a 32-token prompt"),
    (["--new-tokens", "1"], "expected --new-tokens between 2 and 96"),
])
def test_prompt_and_generation_beyond_the_artifact_are_clear_errors(lm_artifacts, capsys, argv, fragment):
    code = main(["bench", str(lm_artifacts["torchscript"].path), "--target", "local", *argv])
    assert code == ConfigError.exit_code
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_generation_options_on_a_model_that_does_not_generate(tiny_artifacts, capsys):
    code = main(["bench", str(tiny_artifacts["torchscript"]), "--target", "local", "--new-tokens", "4"])
    assert code == ConfigError.exit_code
    assert "apply to language models" in capsys.readouterr().err


def test_runner_checks_the_prompt_itself(lm_artifacts):
    """On the device, too, a prompt past the prefill length is one JSON error line, not a traceback."""
    art = lm_artifacts["torchscript"]
    proc = subprocess.run([sys.executable, str(RUNNER_GENERATE_PATH), "--artifact", str(art.path),
                           "--inputs", str(art.dir / "sample_inputs.npz"), "--prompt-tokens", "40"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "--prompt-tokens 40: expected 1..32" in line["error"]


@pytest.fixture(scope="module")
def lm_compare(tmp_path_factory, artifact_cache):
    root = tmp_path_factory.mktemp("lm-compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_CACHE_DIR", str(artifact_cache))
        mp.setenv("EDGE_RESULTS_DB", str(root / "results.db"))
        code, data = _cli_json(["compare", "tiny-llama", "--target", "local", "--backends", "all", "-o",
                                str(root / "out"), "--threads", "1", "--warmup", "1", "--new-tokens", "16"])
        yield code, data, ResultsStore(root / "results.db")


def test_compare_rows_carry_generation_metrics(lm_compare):
    from edge.runner.runner_llamacpp import cpu_problem

    code, data, store = lm_compare
    # 'all' on the local profile: the three exporters and llama.cpp, each generating on the device
    assert [r["backend"] for r in data["rows"]] == [*BACKENDS, "llamacpp"]
    if cpu_problem():  # the prebuilt llama.cpp cannot run on this CPU: its row says why, the rest ran
        assert code == 10 and "AVX2" in data["rows"][-1]["error"], data
        data = {**data, "rows": data["rows"][:-1]}
    else:
        assert code == 0, data
    for row in data["rows"]:
        gen = row["generation"]
        assert gen["new_tokens"] == 16 and gen["decode_tok_s"] > 0 and gen["ttft_ms"] > 0
        f16_cache = row["backend"] == "llamacpp"  # llama.cpp's default KV cache type
        assert gen["kv_cache_bytes"] == (49152 if f16_cache else 98304) and row["metric"] == "perplexity"
    run = store.get_run(data["run_id"])  # the store keeps them
    assert all(r.generation["tokens"] and r.baseline_rss_mb for r in run.rows)


def test_compare_report_csv_and_plot_show_generation(lm_compare):
    code, data, store = lm_compare
    with open(data["csv"]) as f:
        rows = [r for r in csv.DictReader(f) if not r["error"]]  # (llama.cpp's row on a CPU it cannot run on)
    assert len(rows) >= 3 and all(float(r["decode_tok_s"]) > 0 and float(r["ttft_ms"]) > 0 and r["new_tokens"] == "16" for r in rows)
    assert all(float(r["perplexity"]) > 1 and float(r["perplexity_fp32"]) > 1 for r in rows)
    html = open(data["report_html"]).read()
    assert 'id="generation"' in html and 'id="plot-generation"' in html and "decode tok/s" in html


def test_results_compare_diffs_decode_rates(lm_compare, capsys):
    code, data, store = lm_compare
    assert main(["results", "compare", data["run_id"], data["run_id"], "--db", str(store.path)]) == 0
    text = capsys.readouterr().out
    assert "A decode tok/s" in text and "delta decode" in text and "+0.0 (+0.0%)" in text
