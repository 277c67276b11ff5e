"""The SQLite results store and run comparison (runs built by hand; no toolchains)."""
import json
import sqlite3

import pytest

from edge.cli import main
from edge.errors import ResultsError
from edge.results import (SCHEMA_VERSION, ResultsStore, Run, RunRow, compare_runs, default_db_path,
                          new_run_id)

CONTEXT = {"hostname": "pi", "kernel": "6.6.31", "machine": "aarch64", "cpu_governor": "performance",
           "cpu_freq_khz": 1800000, "temp_c_before": 45.0, "temp_c_after": 48.0}


def make_row(backend="executorch", plan_name="fp32", p50=10.0, **over):
    samples = [p50 + 0.1 * (i % 5) for i in range(20)]
    row = RunRow(backend=backend, plan_name=plan_name, plan={"name": plan_name, "recipe": []},
                 size_bytes=100_000, latency_ms={"p50": p50, "p90": p50 + 0.4, "p99": p50 + 0.4,
                                                 "mean": p50 + 0.2, "std": 0.14, "min": p50, "max": p50 + 0.4},
                 latencies_ms=samples, accuracy=0.99, metric="top1", peak_rss_mb=40.0,
                 predicted={"latency_ms": p50 * 1.1, "size_bytes": 98_000}, delegation={"coverage": 1.0},
                 runtime="executorch", runtime_version="1.5.1", threads=4, artifact_sha256="ab" * 32,
                 context=dict(CONTEXT))
    for key, value in over.items():
        setattr(row, key, value)
    return row


def make_run(rows=None, **over):
    run = Run(model="tiny-cnn", profile="raspberry-pi-4-4gb", target="pi", args={"iterations": 20},
              context={"host": {"hostname": "laptop"}, "device": dict(CONTEXT)},
              rows=rows if rows is not None else [make_row(), make_row("tflite", p50=12.0)])
    for key, value in over.items():
        setattr(run, key, value)
    return run


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "results.db")


def test_round_trip_keeps_every_field(store):
    failed = RunRow(backend="torchscript", plan_name="int8", error="ExportError: no", error_type="ExportError",
                    exit_code=4)
    run = make_run([make_row(), failed], status="partial")
    run_id = store.save_run(run)
    back = store.get_run(run_id)
    assert back.to_dict() == run.to_dict()
    assert back.rows[0].latencies_ms == run.rows[0].latencies_ms
    assert back.rows[1].error == "ExportError: no" and not back.rows[1].ok
    assert store.schema_version() == SCHEMA_VERSION
    listed = store.list_runs()
    assert listed[0]["run_id"] == run_id and listed[0]["rows"] == 2 and listed[0]["ok_rows"] == 1


def test_prefix_lookup_latest_ambiguous_and_unknown(store):
    ids = [store.save_run(make_run(run_id=f"20240101-0000{i}0-ab{i}{i}",
                                   created_at=f"2024-01-01T00:00:{i}0+00:00")) for i in range(3)]
    assert store.get_run("20240101-000010").run_id == ids[1]
    assert store.resolve("latest") == ids[2]
    with pytest.raises(ResultsError) as err:
        store.get_run("20240101")
    assert all(i in str(err.value) for i in ids)  # lists the candidates
    with pytest.raises(ResultsError, match="no run matches 'nope'"):
        store.get_run("nope")
    with pytest.raises(ResultsError, match="no run matches"):
        store.get_run("2024010_")  # LIKE wildcards are literal


def test_run_ids_are_unique_and_sortable():
    ids = [new_run_id() for _ in range(200)]
    assert len(set(ids)) > 190 and all(len(i) == 20 for i in ids)


def test_corrupt_db_is_a_results_error(tmp_path):
    path = tmp_path / "results.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ResultsError) as err:
        ResultsStore(path).list_runs()
    assert str(path) in str(err.value) and "move the file away" in str(err.value)
    assert main(["results", "list", "--db", str(path)]) == 9


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "results.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ResultsError, match="newer than this edge supports"):
        ResultsStore(path).list_runs()


def test_failed_write_leaves_no_half_run(store):
    store.save_run(make_run(run_id="keep"))
    bad = make_run(run_id="half", rows=[make_row(), make_row("tflite", size_bytes=object())])
    with pytest.raises(ResultsError):
        store.save_run(bad)
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT COUNT(*) FROM runs WHERE run_id = 'half'").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM rows WHERE run_id = 'half'").fetchone()[0] == 0
    assert [r["run_id"] for r in store.list_runs()] == ["keep"]


def test_default_path_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGE_RESULTS_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_db_path() == tmp_path / "data" / "edge" / "results.db"
    monkeypatch.setenv("EDGE_RESULTS_DB", str(tmp_path / "x.db"))
    assert default_db_path() == tmp_path / "x.db"
    assert ResultsStore().path == tmp_path / "x.db"


def test_compare_runs_same_context_is_comparable():
    a, b = make_run(run_id="a"), make_run(run_id="b", rows=[make_row(p50=8.0), make_row("tflite", p50=12.0)])
    diff = compare_runs(a, b)
    assert diff["comparable"] and diff["flags"] == []
    first = diff["rows"][0]
    assert first["status"] == "both"
    assert first["delta"]["p50_ms"] == pytest.approx(-2.0)
    assert first["delta"]["p50_pct"] == pytest.approx(-20.0)


@pytest.mark.parametrize("change, expected", [
    ({"cpu_governor": "ondemand"}, "cpu_governor differs: performance vs ondemand"),
    ({"cpu_freq_khz": 1500000}, "cpu_freq_khz differs"),
    ({"kernel": "6.1.0"}, "kernel differs"),
    ({"hostname": "pi-2"}, "hostname differs"),
    ({"temp_c_before": 50.0, "temp_c_after": 66.0}, "temperature rose 16.0 C"),
    ({"temp_c_before": 68.0, "temp_c_after": 74.0}, "above 70 C"),
])
def test_compare_runs_flags_differing_context(change, expected):
    a = make_run(run_id="a")
    b = make_run(run_id="b", rows=[make_row(context={**CONTEXT, **change})])
    diff = compare_runs(a, b)
    assert not diff["comparable"]
    assert any(expected in f for f in diff["flags"]), diff["flags"]
    assert any(r["status"] == "only_a" and r["backend"] == "tflite" for r in diff["rows"])


def test_compare_runs_flags_threads_and_runtime_version():
    b = make_run(run_id="b", rows=[make_row(threads=1, runtime_version="1.4.0")])
    flags = compare_runs(make_run(run_id="a"), b)["flags"]
    assert any("threads differs: 4 vs 1" in f for f in flags)
    assert any("runtime_version differs: 1.5.1 vs 1.4.0" in f for f in flags)


def test_results_cli_list_show_compare(store, capsys):
    a = store.save_run(make_run(run_id="20240101-000000-aaaa"))
    b = store.save_run(make_run(run_id="20240102-000000-bbbb",
                                rows=[make_row(context={**CONTEXT, "cpu_governor": "powersave"})]))
    db = ["--db", str(store.path)]
    assert main(["results", "list", "--json", *db]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [b, a]
    assert main(["results", "show", "20240101", *db]) == 0
    assert "executorch" in capsys.readouterr().out
    assert main(["results", "compare", a, b, *db]) == 0
    out = capsys.readouterr().out
    assert "not directly comparable" in out and "cpu_governor differs" in out
    assert main(["results", "show", "2024", *db]) == 9
    assert "ambiguous" in capsys.readouterr().err



def test_runs_saved_in_the_same_second_list_newest_first(store):
    # Run ids end in a random suffix; within one second only insertion order is meaningful.
    stamp = "2026-01-01T00:00:00+00:00"
    ids = [store.save_run(make_run(created_at=stamp)) for _ in range(6)]
    assert [r["run_id"] for r in store.list_runs()] == ids[::-1]
    assert store.get_run("latest").run_id == ids[-1]


def test_two_processes_creating_a_new_store_at_once_both_keep_their_run(tmp_path):
    """The migration takes the write lock before reading the schema version (BEGIN IMMEDIATE)."""
    import subprocess
    import sys
    import time

    code = ("import os, sys, time; from edge.results import ResultsStore; from edge.runs import Run, RunRow\n"
            "open(sys.argv[2], 'w').close()\n"
            "while not os.path.exists(sys.argv[3]): time.sleep(0.001)\n"
            "ResultsStore(sys.argv[1]).save_run(Run(model='m', profile='p', target='t', args={}, status='ok', "
            "context={}, rows=[RunRow(backend='tflite')], extra={}))")
    for pair in range(10):
        db, go = tmp_path / f"pair{pair}.db", tmp_path / f"go{pair}"
        ready = [tmp_path / f"ready{pair}-{i}" for i in range(2)]
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db), str(r), str(go)], stderr=subprocess.PIPE,
                                  text=True) for r in ready]
        try:
            for r, p in zip(ready, procs):  # both imported and waiting: start them together
                while not r.exists():
                    assert p.poll() is None, p.communicate()[1]
                    time.sleep(0.01)
            go.touch()
            errors = [p.communicate(timeout=120)[1] for p in procs]
        finally:
            for p in procs:
                p.kill() if p.poll() is None else None
        assert [p.returncode for p in procs] == [0, 0], errors
        assert len(ResultsStore(db).list_runs()) == 2
