"""Building an index: what the header and sections hold, progress lines, in0 catalogues, bad encodings."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from object2vec.config import Hyperparameters
from object2vec.data.records import TokenSequences
from object2vec.errors import AlgorithmError
from object2vec.retrieval import build as build_module
from object2vec.retrieval.build import IndexBuilder, build_index
from object2vec.retrieval.candidates import CandidateBlock
from object2vec.retrieval.index_file import INDEX_FILE, read_index_file
from object2vec.retrieval.protocol import RetrievalParams
from object2vec.retrieval.retriever import Retriever
from object2vec.serving.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_thread")


def blocks(side: int, sequences: list[list[int]], size: int = 4, start: int = 0) -> list[CandidateBlock]:
    out = []
    for first in range(0, len(sequences), size):
        part = sequences[first : first + size]
        ids = [f'"c{start + first + i}"'.encode() for i in range(len(part))]
        out.append(CandidateBlock(side=side, ids=ids, sequences=TokenSequences.from_lists(part)))
    return out


def test_header_and_sections(retrieval_model_dir) -> None:
    model_dir = retrieval_model_dir(num_classes=3, retrieval_top_n=7)
    predictor = Predictor.load(model_dir, device="cpu")
    sequences = [[i, i + 1, i + 2, i + 3] for i in range(10)]  # longer than enc1_max_seq_len=3
    summary = build_index(predictor, blocks(1, sequences, size=3), predictor.hp, model_dir)  # probes span 2 blocks
    file = read_index_file(model_dir / INDEX_FILE)
    header, sections = file.header, file.sections
    assert summary["bytes"] == file.size and header["count"] == 10 and header["side"] == "in1"
    assert header["search"] == {"kind": "exact", "enc_dim": 8, "nlist": 1, "nprobe": 1, "max_norm": 0.0}
    assert header["defaults"] == {"top_n": 7, "score_class": 2} and header["search_is_exact"] is False
    assert header["probes"] == sequences[:4]  # stored as given; encoding truncates
    assert set(header["seconds"]) == {"encode", "index", "encode_cpu", "index_cpu"}
    assert summary["cpu_seconds"] >= header["seconds"]["encode_cpu"] + header["seconds"]["index_cpu"] - 1e-3
    encoded = predictor.embed(1, TokenSequences.from_lists(sequences))  # (10, 8)
    np.testing.assert_allclose(sections["probe_vectors"], encoded[:4], rtol=1e-6)
    np.testing.assert_allclose(sections["mean"], encoded.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert bytes(sections["ids"]) == b"".join(f'"c{i}"'.encode() for i in range(10))
    assert sections["id_offsets"].tolist() == [0, *np.cumsum([len(f'"c{i}"') for i in range(10)]).tolist()]


def test_progress_is_logged_while_blocks_stream(retrieval_model_dir, monkeypatch, caplog) -> None:
    monkeypatch.setattr(build_module, "PROGRESS_SECONDS", 0.0)
    model_dir = retrieval_model_dir()
    predictor = Predictor.load(model_dir, device="cpu")
    with caplog.at_level(logging.INFO, logger="object2vec.retrieval.build"):
        build_index(predictor, blocks(1, [[i] for i in range(12)]), predictor.hp, model_dir)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("index: ")]
    assert [line.split(" candidates")[0] for line in progress] == ["index: 4", "index: 8", "index: 12"]
    assert "Retrieval index written to" in caplog.text and "12 in1 candidates, exact search" in caplog.text


def test_an_in0_catalogue_is_queried_with_in1(retrieval_model_dir) -> None:
    model_dir = retrieval_model_dir()
    predictor = Predictor.load(model_dir, device="cpu")
    build_index(predictor, blocks(0, [[i % 60] for i in range(30)]), predictor.hp, model_dir)
    retriever = Retriever.load(model_dir, predictor)
    assert retriever is not None and retriever.query_key == "in1"
    found = retriever.neighbors([{"in1": [5, 6]}], RetrievalParams(top_k=30))
    pairs = [{"in0": [i % 60], "in1": [5, 6]} for i in range(30)]
    expected = np.argsort(-predictor.predict(pairs).values[:, 1], kind="stable")
    assert found.rows[0].tolist() == expected.tolist()


def test_non_finite_encodings_are_an_algorithm_error(retrieval_model_dir, monkeypatch) -> None:
    model_dir = retrieval_model_dir()
    predictor = Predictor.load(model_dir, device="cpu")
    monkeypatch.setattr(predictor, "embed", lambda side, sequences: np.full((len(sequences), 8), np.nan, np.float32))
    with pytest.raises(AlgorithmError, match="non-finite"):
        IndexBuilder(predictor, predictor.hp).add(blocks(1, [[1]])[0])
    assert not (model_dir / INDEX_FILE).exists()


def test_hyperparameters_given_to_the_builder_decide_the_plan(retrieval_model_dir) -> None:
    model_dir = retrieval_model_dir()
    predictor = Predictor.load(model_dir, device="cpu")
    hp = Hyperparameters.from_dict({**predictor.hp.to_dict(), "retrieval_index": "ivf", "retrieval_ivf_nlist": 5})
    summary = build_index(predictor, blocks(1, [[i] for i in range(200)], size=64), hp, model_dir)
    assert summary["search"]["kind"] == "ivf" and summary["search"]["nlist"] == 5 and summary["search"]["nprobe"] == 5
    assert Path(model_dir / INDEX_FILE).stat().st_size == summary["bytes"]
