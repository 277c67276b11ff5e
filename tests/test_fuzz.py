"""Property-based tests over every loader and parser (issue 12): an input is either accepted as a valid
object or rejected with an EdgeError; never a traceback, never an accepted-but-invalid object.

Strategies and invariants live in tests/fuzz_cases.py and tests/fuzz_checks.py (benchmarks/fuzz.py runs
the same properties at 1,000 cases per loader).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from edge.errors import ConfigError, RunnerError
from fuzz_cases import LOADERS, MANIFESTS, NATIVE, PLANS, PROFILES, RUNNER_LINES, TARGETS, classify, render

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("loader", LOADERS, ids=[lo.name for lo in LOADERS])
def test_loader_accepts_valid_objects_or_raises_edge_error(loader, tmp_path_factory):
    scratch = tmp_path_factory.mktemp(loader.name)

    @FUZZ
    @given(case=loader.inputs)
    def run(case):
        outcome, detail = classify(loader, case, scratch)
        assert outcome in ("accepted", "rejected"), f"{loader.name}: {outcome}\n{detail}"

    run()


@pytest.mark.parametrize("loader", LOADERS, ids=[lo.name for lo in LOADERS])
def test_the_unmutated_documents_are_accepted(loader, tmp_path):
    """The strategies start from documents the loaders accept (else the fuzzing proves little)."""
    cases = {"profile": [render(p, [], "yaml").encode() for p in PROFILES],
             "targets": [render(t, [], "yaml").encode() for t in TARGETS],
             "plan": [(render(p, [], fmt).encode(), fmt) for p in PLANS for fmt in ("yaml", "json")],
             "manifest": [render(m, [], "json").encode() for m in MANIFESTS],
             "runner-json": [json.dumps(r) for r in RUNNER_LINES],
             "native-output": [(backend, text, 2) for backend, text in NATIVE]}[loader.name]
    for case in cases:
        assert classify(loader, case, tmp_path) == ("accepted", ""), loader.name


@pytest.mark.parametrize("text,fragment", [
    ("name: 2001-13-01\n", "invalid YAML value (month must be in 1..12)"),
    ("name: !!float abc\n", "invalid YAML value"),
    ("name: " + "[" * 3000 + "\n", "nesting too deep"),
    ("name: " + "1" * 5000 + "\n", "invalid YAML value"),
])
def test_yaml_values_pyyaml_cannot_build_are_config_errors(tmp_path, text, fragment):
    from edge.planner import load_plan
    from edge.profiles import load_profile
    from edge.targets import parse_targets_file

    for loader, name in ((load_profile, "p.yaml"), (parse_targets_file, "t.yaml"), (load_plan, "plan.yaml")):
        path = tmp_path / name
        path.write_text(text.replace("name", "targets") if loader is parse_targets_file else text)
        with pytest.raises(ConfigError, match=re.escape(fragment)) as raised:
            loader(path if loader is not load_profile else str(path))
        assert str(raised.value).startswith(str(path)), raised.value


@pytest.mark.parametrize("text", [
    "count=5 first=. curr=1 min=. max=1 avg=1 std=0\nInference timings in us: Init: 1, First inference: 1, "
    "Warmup (avg): 1, Inference (avg): 1",
    "Model executed successfully 0 time(s) in 5 ms.",
    "Model loaded in 1e999 ms.\nModel executed successfully 1 time(s) in 5 ms.",
])
def test_native_tool_output_with_broken_numbers_is_a_runner_error(text):
    from edge.bench_native import parse_benchmark_model, parse_executor_runner

    parse = parse_benchmark_model if text.startswith("count") else parse_executor_runner
    with pytest.raises(RunnerError):
        parse(text)


@pytest.mark.parametrize("line,fragment", [
    ('{"schema_version": 1, "latencies_ms": [1.0], "generation": {"tokens": [{}]}}', "generation.tokens"),
    ('{"schema_version": 1, "latencies_ms": [1.0], "load_ms": "fast"}', "load_ms as a number"),
    ('{"schema_version": 1, "latencies_ms": [1.0], "runtime_version": 2}', "runtime_version as text"),
    ('{"schema_version": 1, "latencies_ms": [1e300]}', "finite numbers >= 0"),
])
def test_runner_lines_with_wrong_field_types_are_runner_errors(line, fragment):
    from edge.artifact import Artifact
    from edge.benchmark import make_result, parse_runner_output

    artifact = Artifact(Path("/x/model.ptl"), MANIFESTS[1])
    with pytest.raises(RunnerError, match=fragment):
        make_result(parse_runner_output(line), artifact, "dev")


@pytest.mark.parametrize("loader_name,case,fragment", [
    ("manifest", b"[1, 2]", "expected a JSON object, found list"),
    ("manifest", b"\xff\xfe{}", "not UTF-8"),
    ("manifest", json.dumps({**MANIFESTS[0], "backend": None}).encode(), "expected backend one of"),
    ("manifest", json.dumps({**MANIFESTS[0], "size_bytes": "16"}).encode(), "size_bytes as a whole number"),
    ("plan", (json.dumps({**PLANS[0], "groups": "abc"}).encode(), "json"), "groups: expected a mapping"),
    ("plan", (json.dumps({**PLANS[0], "reasons": "abc"}).encode(), "json"), "reasons: expected a list of text"),
    ("plan", (json.dumps({**PLANS[0], "model": None}).encode(), "json"), "model: expected a non-empty name"),
    ("plan", (render({**PLANS[0], 1: 2}, [], "yaml").encode(), "yaml"), "unknown [1]"),
    ("targets", b"targets:\n  null: {transport: local, profile: p}\n", "expected target names matching"),
    ("targets", b"targets: 0\n", "'targets' must map target names to fields"),
    ("targets", b"targets:\n  a: {transport: local, profile: ''}\n", "non-empty and on one line"),
    ("targets", b"1: 2\nb: 3\n", "expected a mapping with the single key 'targets'"),
])
def test_found_by_fuzzing(loader_name, case, fragment, tmp_path):
    """Inputs that were tracebacks or accepted-but-invalid before the fuzzing found them."""
    loader = next(lo for lo in LOADERS if lo.name == loader_name)
    outcome, detail = classify(loader, case, tmp_path)
    assert outcome == "rejected" and fragment in detail, (outcome, detail)
