"""Vocab files and streamed pretrained-embedding files (data/vocab.py)."""

from __future__ import annotations

import gzip
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from object2vec.config import Hyperparameters
from object2vec.data.vocab import (
    FROZEN_ROWS,
    auxiliary_file,
    initialise_token_embeddings,
    read_pretrained,
    read_vocab,
)
from object2vec.environment import Channel
from object2vec.errors import ClientError
from object2vec.model.object2vec import Object2VecModel

VOCAB = {"the": 0, "cat": 1, "sat": 2, "new york": 3, "mat": 4}


def glove(rows: dict[str, list[float]], header: bool = False) -> bytes:
    dim = len(next(iter(rows.values())))
    lines = [f"{len(rows)} {dim}"] if header else []
    lines += [f"{token} {' '.join(f'{v:g}' for v in values)}" for token, values in rows.items()]
    return ("\n".join(lines) + "\n").encode()


def vectors_of(rows: object) -> dict[int, list[float]]:
    return {int(i): [float(x) for x in v] for i, v in zip(rows.ids, rows.vectors, strict=True)}  # type: ignore[attr-defined]


def test_keeps_only_vocab_tokens_in_id_order() -> None:
    data = glove({"zebra": [9, 9], "sat": [2, 2.5], "the": [0, 0.5], "dog": [7, 7]})
    rows = read_pretrained(io.BytesIO(data), VOCAB, dim=2)
    assert rows.ids.tolist() == [0, 2]
    assert vectors_of(rows) == {0: [0, 0.5], 2: [2, 2.5]}
    assert rows.dim == 2 and rows.lines == 4
    assert rows.vectors.dtype == np.float32


def test_word2vec_header_crlf_blank_lines_and_spaced_tokens() -> None:
    data = b"3 2\r\nthe 1 2\r\n\r\nnew york 3 4\r\n. . . 5 6\r\n"
    rows = read_pretrained(io.BytesIO(data), {**VOCAB, ".": 5}, dim=2)
    assert vectors_of(rows) == {0: [1, 2], 3: [3, 4]}  # ". . ." is not "."
    assert rows.lines == 3


def test_first_occurrence_wins_and_shared_ids_keep_the_first_found() -> None:
    data = glove({"the": [1, 1], "cat": [2, 2]}) + b"the 3 3\n"
    rows = read_pretrained(io.BytesIO(data), {"the": 0, "cat": 0}, dim=2)
    assert vectors_of(rows) == {0: [1, 1]}


def test_dimension_mismatch_names_both_numbers() -> None:
    with pytest.raises(ClientError, match=r"has 3-dimensional vectors, but the token embedding dimension is 8"):
        read_pretrained(io.BytesIO(glove({"the": [1, 2, 3]})), VOCAB, dim=8)
    with pytest.raises(ClientError, match=r"3-dimensional.* dimension is 4"):
        read_pretrained(io.BytesIO(glove({"the": [1, 2, 3]}, header=True)), VOCAB, dim=4)


@pytest.mark.parametrize(
    ("line", "problem"),
    [(b"cat 1\n", "has 1 values after the token, expected 2"), (b"cat 1 x\n", "is not a number")],
)
def test_bad_vector_line_names_line(line: bytes, problem: str) -> None:
    with pytest.raises(ClientError, match=f"line 2: .*{problem}"):
        read_pretrained(io.BytesIO(b"the 1 2\n" + line), VOCAB, dim=2)


def test_bad_unwanted_lines_are_not_parsed() -> None:
    # "cat 1 2 3" reads as the token "cat 1" (not wanted), as ". . . 5 6" reads as ". . .".
    rows = read_pretrained(io.BytesIO(b"the 1 2\nzebra oops\ncat 1 2 3\n"), VOCAB, dim=2)
    assert rows.ids.tolist() == [0]


def test_empty_file_is_a_client_error() -> None:
    with pytest.raises(ClientError, match="holds no vectors"):
        read_pretrained(io.BytesIO(b"\n"), VOCAB)


def test_read_vocab_checks_ids(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(VOCAB))
    assert read_vocab(path, 5) == VOCAB
    with gzip.open(tmp_path / "v.gz", "wt") as f:
        f.write(json.dumps(VOCAB))
    assert read_vocab(tmp_path / "v.gz", 5) == VOCAB
    with pytest.raises(ClientError, match=r"'mat' has id 4, outside \[0, 4\)"):
        read_vocab(path, 4)
    path.write_text('{"a": "1"}')
    with pytest.raises(ClientError, match="not an integer"):
        read_vocab(path, 4)
    path.write_text("[1, 2]")
    with pytest.raises(ClientError, match="must be a JSON object"):
        read_vocab(path, 4)


def test_auxiliary_file_checks(tmp_path: Path) -> None:
    channel = Channel("auxiliary", tmp_path, None, "File", "FullyReplicated")
    (tmp_path / "vocab.json").write_text("{}")
    (tmp_path / "folder").mkdir()
    assert auxiliary_file(channel, "enc0_vocab_file", "vocab.json") == tmp_path / "vocab.json"
    with pytest.raises(ClientError, match=r"no such file .*it holds: folder, vocab.json"):
        auxiliary_file(channel, "enc0_vocab_file", "other.json")
    with pytest.raises(ClientError, match="not a regular file"):
        auxiliary_file(channel, "enc0_vocab_file", "folder")
    with pytest.raises(ClientError, match="no channel named auxiliary"):
        auxiliary_file(None, "enc0_vocab_file", "vocab.json")


def make_hp(**changes: object) -> Hyperparameters:
    raw = {
        "enc0_network": "pooled_embedding",
        "enc0_max_seq_len": 4,
        "enc0_vocab_size": 6,
        "enc0_token_embedding_dim": 2,
        "enc_dim": 4,
        "mlp_dim": 4,
        "mlp_layers": 1,
        "enc0_vocab_file": "vocab.json",
        "enc0_pretrained_embedding_file": "vectors.txt",
    }
    raw.update(changes)
    return Hyperparameters.from_dict(raw)


@pytest.fixture()
def aux(tmp_path: Path) -> Channel:
    (tmp_path / "vocab.json").write_text(json.dumps(VOCAB))
    (tmp_path / "vectors.txt").write_bytes(glove({"the": [1, 2], "sat": [3, 4], "zebra": [5, 6]}))
    (tmp_path / "other.txt").write_bytes(glove({"the": [7, 7], "cat": [8, 8]}))
    return Channel("auxiliary", tmp_path, None, "File", "FullyReplicated")


def test_initialise_copies_rows_and_marks_frozen(aux: Channel, caplog: pytest.LogCaptureFixture) -> None:
    hp = make_hp(enc1_network="pooled_embedding", enc1_vocab_size=6, enc1_max_seq_len=4, enc1_token_embedding_dim=2)
    model = Object2VecModel(hp)
    with caplog.at_level(logging.INFO):
        reports = initialise_token_embeddings(model, hp, aux)
    weight = model.token_embedding(0).weight
    assert weight[0].tolist() == [1, 2] and weight[2].tolist() == [3, 4]
    assert getattr(model.token_embedding(0), FROZEN_ROWS).tolist() == [True, False, True, False, False, False]
    assert getattr(model.token_embedding(1), FROZEN_ROWS, None) is None
    assert [(r.pretrained_rows, r.frozen_rows) for r in reports] == [(2, 2), (0, 0)]
    assert "enc0 token embedding: 2 of 6 vocab rows from pretrained file vectors.txt, frozen" in caplog.text
    assert "enc1 token embedding: 0 of 6 vocab rows from a pretrained file (none given)" in caplog.text
    assert FROZEN_ROWS not in model.state_dict() and not any(FROZEN_ROWS in k for k in model.state_dict())


def test_initialise_trainable_and_copied_encoder(aux: Channel) -> None:
    hp = make_hp(enc0_freeze_pretrained_embedding="false")  # enc1_network=enc0: same files, read once
    model = Object2VecModel(hp)
    reports = initialise_token_embeddings(model, hp, aux)
    for index in (0, 1):
        assert model.token_embedding(index).weight[2].tolist() == [3, 4]
        assert getattr(model.token_embedding(index), FROZEN_ROWS, None) is None
    assert [(r.pretrained_rows, r.frozen_rows, r.tied_to) for r in reports] == [(2, 0, None), (2, 0, None)]


def test_tied_tables_take_enc0_rows_first(aux: Channel, caplog: pytest.LogCaptureFixture) -> None:
    hp = make_hp(
        tied_token_embedding_weight="true",
        enc1_network="pooled_embedding",
        enc1_vocab_size=6,
        enc1_max_seq_len=4,
        enc1_token_embedding_dim=2,
        enc1_vocab_file="vocab.json",
        enc1_pretrained_embedding_file="other.txt",
        enc1_freeze_pretrained_embedding="false",
    )
    model = Object2VecModel(hp)
    with caplog.at_level(logging.INFO):
        reports = initialise_token_embeddings(model, hp, aux)
    table = model.token_embedding(0)
    assert table is model.token_embedding(1)
    assert table.weight[0].tolist() == [1, 2]  # enc0's file wins
    assert table.weight[1].tolist() == [8, 8]  # enc1's file fills the rest, trainable
    assert getattr(table, FROZEN_ROWS).tolist() == [True, False, True, False, False, False]
    assert reports[1].pretrained_rows == 3 and reports[1].frozen_rows == 2 and reports[1].tied_to == 0
    assert "vectors.txt, other.txt, 2 of them frozen (tied: one table shared with enc0)" in caplog.text


def test_dimension_mismatch_through_initialise(aux: Channel) -> None:
    hp = make_hp(enc0_token_embedding_dim=3)
    with pytest.raises(ClientError, match="2-dimensional vectors, but the token embedding dimension is 3"):
        initialise_token_embeddings(Object2VecModel(hp), hp, aux)


def test_untouched_rows_keep_their_random_init(aux: Channel) -> None:
    hp = make_hp()
    torch.manual_seed(0)
    model = Object2VecModel(hp)
    before = model.token_embedding(0).weight.detach().clone()
    initialise_token_embeddings(model, hp, aux)
    after = model.token_embedding(0).weight.detach()
    assert torch.equal(before[[1, 3, 4, 5]], after[[1, 3, 4, 5]])
