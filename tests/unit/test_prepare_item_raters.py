"""`prepare ratings --item-raters`: the rater tokens, the limit, leaving the pair's own user out, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from object2vec.config import MAX_VOCAB_SIZE
from object2vec.errors import ClientError
from object2vec.prepare.item_raters import MAX_RATING_LEVELS, build_item_raters

# (item, user, rating) training rows; items 1..3 (vocab 4), users 0..2 (vocab 3)
ROWS = [(1, 0, 5.0), (1, 1, 3.0), (1, 2, 1.0), (2, 2, 3.0), (3, 0, 3.0)]


def build(rows=ROWS, limit: int = 10, item_vocab: int = 4, user_vocab: int = 3, seed: int = 0):
    items, users, ratings = (np.array(column) for column in zip(*rows, strict=True))
    return build_item_raters(
        items.astype(np.int64),
        users.astype(np.int64),
        ratings.astype(np.float64),
        item_vocab_size=item_vocab,
        user_vocab_size=user_vocab,
        limit=limit,
        rng=np.random.default_rng(seed),
    )


def test_tokens_name_the_user_and_the_rating_level() -> None:
    raters = build()
    # levels 1, 3, 5 -> 0, 1, 2; token = 4 + user x 3 + level
    assert raters.levels == (1.0, 3.0, 5.0)
    assert raters.sequence(1) == [1, 4 + 0 * 3 + 2, 4 + 1 * 3 + 1, 4 + 2 * 3 + 0]
    assert raters.sequence(2) == [2, 4 + 2 * 3 + 1]
    assert raters.sequence(3) == [3, 4 + 0 * 3 + 1]
    assert raters.vocab_size == 4 + 3 * 3
    assert raters.max_seq_len == 4
    assert raters.describe() == {
        "most_raters": 3,
        "levels": [1.0, 3.0, 5.0],
        "token_offset": 4,
        "token": "token_offset + user id x len(levels) + the rating's index in levels",
    }


def test_the_pairs_own_user_is_left_out() -> None:
    raters = build()
    assert raters.sequence(1, leave_out_user=1) == [1, 6, 10]
    assert raters.sequence(2, leave_out_user=2) == [2]  # its only rater: the id alone
    assert raters.sequence(2, leave_out_user=0) == [2, 11]  # not a rater: nothing to leave out


def test_a_user_who_rated_an_item_twice_is_left_out_entirely() -> None:
    raters = build([(1, 0, 5.0), (1, 0, 1.0), (1, 1, 3.0)])
    assert raters.sequence(1) == [1, 4, 6, 8]
    assert raters.sequence(1, leave_out_user=0) == [1, 8]


def test_an_item_without_training_ratings_is_its_id_alone() -> None:
    assert build().sequence(0) == [0]
    assert build().sequence(0, leave_out_user=1) == [0]


def test_the_limit_keeps_a_seeded_random_choice() -> None:
    rows = [(1, user, 1.0 + user % 5) for user in range(50)]
    chosen = {seed: build(rows, limit=7, user_vocab=50, seed=seed).sequence(1) for seed in range(3)}
    for sequence in chosen.values():
        assert sequence[0] == 1 and len(sequence) == 8
        assert sequence[1:] == sorted(sequence[1:])  # tokens in increasing order
    assert build(rows, limit=7, user_vocab=50, seed=0).sequence(1) == chosen[0]
    assert len({tuple(sequence) for sequence in chosen.values()}) > 1
    assert build(rows, limit=7, user_vocab=50).max_seq_len == 8


def test_too_many_rating_levels_is_a_client_error() -> None:
    rows = [(1, 0, 1.0 + level / 10) for level in range(MAX_RATING_LEVELS + 1)]
    with pytest.raises(ClientError, match="take 21 distinct values.*round the ratings"):
        build(rows)


def test_a_vocabulary_over_the_limit_is_a_client_error() -> None:
    with pytest.raises(ClientError, match="--remap"):
        build(user_vocab=MAX_VOCAB_SIZE // 3 + 1)


def test_no_training_rows_gives_ids_alone() -> None:
    raters = build_item_raters(
        *(np.zeros(0, dtype) for dtype in (np.int64, np.int64, np.float64)),
        item_vocab_size=4,
        user_vocab_size=3,
        limit=5,
        rng=np.random.default_rng(0),
    )
    assert raters.sequence(2) == [2]
    assert raters.max_seq_len == 1
