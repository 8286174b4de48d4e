"""`prepare silver-pairs`: which objects are paired, how the teacher's cosine becomes a label, the
input formats (batch transform's JSON Lines, bare vectors, .npy) and the errors users can fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from object2vec.prepare.cli import prepare_main
from object2vec.prepare.silver_pairs import silver_pairs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prepare"
INSTANCES = FIXTURES / "silver_instances.jsonl"
EMBEDDINGS = FIXTURES / "silver_embeddings.jsonl"
GOLDEN = FIXTURES / "expected" / "silver_pairs.jsonl"


def prepare(capsys: pytest.CaptureFixture, *argv: Any) -> dict[str, Any]:
    code = prepare_main([str(a) for a in ("silver-pairs", *argv)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def fail(capsys: pytest.CaptureFixture, *argv: Any) -> str:
    assert prepare_main([str(a) for a in ("silver-pairs", *argv)]) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def unit(rows: list[list[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the pairing


def test_each_object_is_paired_with_its_nearest_and_labelled_with_the_scaled_cosine() -> None:
    # 0 and 1 are close, 2 and 3 are close, the two groups are orthogonal
    embeddings = unit([[1, 0.1, 0], [1, 0.3, 0], [0, 0, 1], [0, 0.2, 1]])
    pairs = silver_pairs(embeddings, neighbours=1, randoms=0, label_max=5.0)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (2, 3)]
    for i, j, label in pairs:
        assert label == pytest.approx(5 * float(embeddings[i] @ embeddings[j]), abs=1e-5)
        assert label == round(label, 6)
        assert 4.5 < label <= 5.0


def test_random_partners_reach_the_low_end_and_negative_cosines_clip_to_zero() -> None:
    embeddings = unit([[1, 0], [-1, 0.05], [0.05, 1], [1, 0.02]])
    pairs = silver_pairs(embeddings, neighbours=0, randoms=20, label_max=5.0, seed=3)
    found = {(i, j): label for i, j, label in pairs}
    assert all(i < j for i, j in found)  # each pair once, never an object with itself
    assert found[(0, 1)] == 0.0  # cosine -1 -> 0, not -5
    assert len(found) == 5  # every pair but (0, 3): the same object written twice (cosine >= 0.999)


def test_the_pairs_are_deterministic_per_seed_and_bounded_by_the_counts() -> None:
    rng = np.random.default_rng(0)
    embeddings = unit(rng.normal(size=(300, 8)).tolist())
    pairs = silver_pairs(embeddings, neighbours=5, randoms=5, seed=0)
    assert pairs == silver_pairs(embeddings, neighbours=5, randoms=5, seed=0)
    assert pairs != silver_pairs(embeddings, neighbours=5, randoms=5, seed=1)
    assert 300 * 5 // 2 <= len(pairs) <= 300 * 10
    assert all(0.0 <= label <= 1.0 for _, _, label in pairs)


def test_more_neighbours_than_objects_pairs_everything_once() -> None:
    embeddings = unit([[1, 0], [0, 1], [1, 1]])
    assert [(i, j) for i, j, _ in silver_pairs(embeddings, neighbours=10, randoms=0)] == [(0, 1), (0, 2), (1, 2)]


# --- the command


def test_golden_output_in_both_orders_with_blank_lines_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "silver.jsonl"
    report = prepare(capsys, "--instances", INSTANCES, "--embeddings", EMBEDDINGS, "--output", out, "--neighbours", 1)
    assert out.read_text() == GOLDEN.read_text()
    assert report["objects"] == 5 and report["pairs"] == 8 and report["records"] == 16
    assert report["hyperparameters"] == {"output_layer": "mean_squared_error"}
    rows = records(out)
    assert rows[0] == {"in0": [4, 5, 6], "in1": [4, 5, 7], "label": rows[0]["label"]}
    assert rows[1]["in0"] == [4, 5, 7] and rows[1]["label"] == rows[0]["label"]  # the same pair, swapped


def test_one_order_label_max_and_npy_or_bare_vectors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    vectors = [json.loads(line)["embeddings"] for line in EMBEDDINGS.read_text().splitlines() if line]
    npy, bare = tmp_path / "teacher.npy", tmp_path / "bare.jsonl"
    np.save(npy, np.asarray(vectors))
    bare.write_text("".join(json.dumps(v) + "\n" for v in vectors))
    outputs = []
    for source in (npy, bare):
        out = tmp_path / f"pairs_from_{source.stem}.jsonl"
        common = ("--instances", INSTANCES, "--embeddings", source, "--output", out, "--neighbours", 1)
        report = prepare(capsys, *common, "--no-both-orders", "--label-max", 5)
        assert report["records"] == report["pairs"] == 8
        outputs.append(records(out))
    assert outputs[0] == outputs[1]
    golden = records(GOLDEN)[::2]
    for row, expected in zip(outputs[0], golden, strict=True):
        assert row["label"] == pytest.approx(5 * expected["label"], abs=1e-5)


def test_refuses_to_replace_its_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "silver.jsonl"
    out.write_text("keep me\n")
    assert "--overwrite" in fail(capsys, "--instances", INSTANCES, "--embeddings", EMBEDDINGS, "--output", out)
    assert out.read_text() == "keep me\n"


@pytest.mark.parametrize(
    ("instances", "embeddings", "message"),
    [
        ('{"in0": [1]}\n{"in0": [2]}\n', "[1, 0]\n", "has 2 objects but --embeddings"),
        ('{"in0": [1]}\n{"in0": [2]}\n', "[1, 0]\n[1]\n", "line 2: 1 values, but line 1's vector has 2"),
        ('{"in0": [1]}\n{"in0": [2]}\n', "[1, 0]\n[0, 0]\n", "vector 2 is all zeros"),
        ('{"in0": [1]}\n{"in0": [2]}\n', '[1, 0]\n{"scores": [0.5]}\n', "line 2: expected"),
        ('{"in0": [1]}\n{"in0": [2]}\n', "[1, 0]\n[1, NaN]\n", "line 2: not valid JSON"),
        ('{"in0": [1]}\n{"in0": [2]}\n', "[1, 0]\n[1e999, 0]\n", "infinity"),
        ('{"in0": [1]}\n{"in0": [2]}\n', "[1, 0]\n[1e39, 0]\n", "finite as a float32"),
        ('{"in0": [1]}\n{"in0": [1], "in1": [2]}\n', "[1, 0]\n[0, 1]\n", 'exactly one of "in0" or "in1"'),
        ('{"in0": [1]}\n{"in0": [-2]}\n', "[1, 0]\n[0, 1]\n", "non-negative integer token ids"),
        ('{"in0": [1]}\nnot json\n', "[1, 0]\n[0, 1]\n", "line 2: not valid JSON"),
        ('{"in0": [1]}\n', "[1, 0]\n", "at least 2 objects"),
    ],
)
def test_bad_inputs_are_one_line_client_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, instances: str, embeddings: str, message: str
) -> None:
    (tmp_path / "i.jsonl").write_text(instances)
    (tmp_path / "e.jsonl").write_text(embeddings)
    out = tmp_path / "silver.jsonl"
    error = fail(capsys, "--instances", tmp_path / "i.jsonl", "--embeddings", tmp_path / "e.jsonl", "--output", out)
    assert error.startswith("error: ") and message in error
    assert not out.exists()


def test_bad_npy_and_partner_counts_are_client_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "silver.jsonl"
    flat = tmp_path / "flat.npy"
    np.save(flat, np.ones(5))
    assert "2-D numeric" in fail(capsys, "--instances", INSTANCES, "--embeddings", flat, "--output", out)
    huge = tmp_path / "huge.npy"
    np.save(huge, np.array([[1.0, 0.0], [1e300, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 2.0]]))
    assert "beyond-float32" in fail(capsys, "--instances", INSTANCES, "--embeddings", huge, "--output", out)
    args = ("--instances", INSTANCES, "--embeddings", EMBEDDINGS, "--output", out)
    assert "both 0" in fail(capsys, *args, "--neighbours", 0, "--randoms", 0)
    assert "at most 100" in fail(capsys, *args, "--randoms", 101)
    assert prepare_main(["silver-pairs", *map(str, args), "--label-max", "-1"]) == 2  # argparse's usage error
    assert not out.exists()
