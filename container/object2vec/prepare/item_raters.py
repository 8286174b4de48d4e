"""`prepare ratings --item-raters N`: each item described by its id and by who rated it how.

An item's in1 becomes [item id, t1, ..., tk], one token per training rating of the item (up to N of
them: a seeded random choice when it has more), in increasing order:

    token = offset + user id x levels + level

where offset is the item vocabulary's size (the item ids keep their tokens), levels the number of
distinct training ratings and level the rating's rank among them (0 = the lowest). pooled_embedding
averages the tokens, so an item's vector is also "what its raters made of it" (I-AutoRec's view of an
item as its column of the rating matrix), which the id alone learns only through the factorisation.

A training pair's own user is left out of its item's raters: otherwise the model reads the label from
its input. Validation and test pairs see the item's training raters only (their own rating is not a
training rating), as a request for a new pair would; candidates.jsonl lists every item with its raters,
which is what requests for an item's pairs, and retrieval among the items, take as in1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from object2vec.config import MAX_SEQ_LEN_LIMIT, MAX_VOCAB_SIZE
from object2vec.errors import ClientError

MAX_RATING_LEVELS = 20  # distinct rating values a token can stand for (MovieLens: 5 or 10)
MAX_ITEM_RATERS = MAX_SEQ_LEN_LIMIT - 1  # the id plus the raters must fit one encoder input


@dataclass(frozen=True)
class ItemRaters:
    """Per item id: its chosen raters' user ids and their tokens (the same order, tokens increasing)."""

    offset: int  # the first rater token: the item vocabulary's size
    levels: tuple[float, ...]  # the distinct training ratings, increasing
    user_vocab_size: int
    users: dict[int, np.ndarray]  # item id -> (k,) int64 user ids
    tokens: dict[int, np.ndarray]  # item id -> (k,) int64 tokens

    @property
    def vocab_size(self) -> int:
        return self.offset + self.user_vocab_size * len(self.levels)

    @property
    def max_seq_len(self) -> int:
        return 1 + max((len(tokens) for tokens in self.tokens.values()), default=0)

    def sequence(self, item: int, leave_out_user: int | None = None) -> list[int]:
        """[item, its rater tokens...], without leave_out_user's (the pair's own user, in training)."""
        tokens = self.tokens.get(item)
        if tokens is None:
            return [item]
        if leave_out_user is not None:
            tokens = tokens[self.users[item] != leave_out_user]
        return [item, *tokens.tolist()]

    def describe(self) -> dict[str, object]:
        """What the report says about the tokens, so that a client can read or build them."""
        return {
            "most_raters": self.max_seq_len - 1,
            "levels": list(self.levels),
            "token_offset": self.offset,
            "token": "token_offset + user id x len(levels) + the rating's index in levels",
        }


def build_item_raters(
    items: np.ndarray,
    users: np.ndarray,
    ratings: np.ndarray,
    item_vocab_size: int,
    user_vocab_size: int,
    limit: int,
    rng: np.random.Generator,
) -> ItemRaters:
    """items, users, ratings: (R,) the training rows' item ids, user ids and ratings."""
    levels = np.unique(ratings)
    if len(levels) > MAX_RATING_LEVELS:
        raise ClientError(
            f"--item-raters: the training ratings take {len(levels)} distinct values, more than the "
            f"{MAX_RATING_LEVELS} rating levels a rater token can stand for; round the ratings first"
        )
    vocab_size = item_vocab_size + user_vocab_size * len(levels)
    if vocab_size > MAX_VOCAB_SIZE:
        raise ClientError(
            f"--item-raters: the items' vocabulary would hold {vocab_size:,} tokens (the largest user id + 1 = "
            f"{user_vocab_size:,} users x {len(levels)} rating levels), above the {MAX_VOCAB_SIZE:,} limit of "
            "enc1_vocab_size; use --remap for dense user ids, or leave --item-raters out"
        )
    tokens = item_vocab_size + users * len(levels) + np.searchsorted(levels, ratings)  # (R,)
    # Rows grouped by item, in a seeded random order within each item: the first `limit` are kept.
    order = np.lexsort((rng.random(len(items)), items))
    sorted_items = items[order]
    _, starts, counts = np.unique(sorted_items, return_index=True, return_counts=True)  # per item
    chosen_users: dict[int, np.ndarray] = {}
    chosen_tokens: dict[int, np.ndarray] = {}
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        rows = order[start : start + min(count, limit)]
        rows = rows[np.argsort(tokens[rows], kind="stable")]
        item = int(sorted_items[start])
        chosen_users[item], chosen_tokens[item] = users[rows], tokens[rows]
    return ItemRaters(
        offset=item_vocab_size,
        levels=tuple(float(level) for level in levels),
        user_vocab_size=user_vocab_size,
        users=chosen_users,
        tokens=chosen_tokens,
    )
