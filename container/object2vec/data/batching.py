"""Mini-batches: each side of a batch is its token ids kept flat, plus at most one view that its encoder needs.

`Tokens` holds B sequences without padding: `ids` (T,) are the real tokens in batch order,
`offsets`/`lengths` (B,) say where each sequence starts and how long it is (offsets are the
running sum of lengths), and `rows` (T,) names the sequence of every token. Pooling encoders
read this directly (`embedding_bag` with offsets; a flat convolution with neighbour indices).

An encoder that needs another layout says so in its class attribute `layout`; `Batch.with_layouts`
then builds that view once per batch, on the CPU, before the batch moves to the device:
- "flat": nothing more (pooled_embedding, hcnn);
- "packed": `packing`, the tokens time-major with the longest sequence first, as cuDNN and
  `PackedSequence` lay them out (bilstm);
- "padded": `padded`, a (B, L) id matrix padded with 0 (for encoders that need a rectangle).
An encoder called with Tokens that lack its view (serving, tests) builds it itself through
`Tokens.packed()` / `Tokens.padded_ids()`, so every encoder accepts plain flat Tokens.

Batches are shuffled with a seeded generator; `bucket_width` groups records of similar lengths
(training), and evaluation batches are bucketed by length too (`length_sorted_batches`).

Grouped batches (`negative_sampling_grouped`: `iterate_batches(grouped=True)`) keep the records
that share one in0 sequence (a record and the negatives drawn for it) next to each other, and their
batch holds that in0 once: `Batch.in0` then has one sequence per distinct in0 and `Batch.in0_rows`
(B,) says which one each pair uses, so the in0 encoder runs once per document instead of once per
pair. Evaluation batches do the same for an in0 repeated in the data (`repeated_in0`).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from object2vec.data.records import PairDataset, TokenSequences

LAYOUTS = ("flat", "packed", "padded")


@dataclass(frozen=True)
class Packing:
    """A time-major packing of B sequences: step t holds the t-th token of the batch_sizes[t]
    longest sequences, longest first (ties in batch order), as in cuDNN and PackedSequence.

    Slot p of the packing holds flat token order[p]; flat token j sits in slot position[j].
    Sequence b is the rank[b]-th longest: its first token is in slot rank[b] and its last in
    slot last[b] (0 for an empty sequence, which has no slot).
    """

    order: torch.Tensor  # (T,) int64 flat index of each slot
    position: torch.Tensor  # (T,) int64 slot of each flat token
    batch_sizes: torch.Tensor  # (L,) int64, on the CPU (as PackedSequence wants it), non-increasing
    steps: tuple[int, ...]  # batch_sizes as Python ints, for loops over time steps
    sorted_rows: torch.Tensor  # (B,) int64 rows by decreasing length
    rank: torch.Tensor  # (B,) int64 inverse of sorted_rows
    last: torch.Tensor  # (B,) int64 slot of each sequence's last token

    def to(self, device: torch.device) -> Packing:
        moved = {
            name: getattr(self, name).to(device, non_blocking=True)
            for name in ("order", "position", "sorted_rows", "rank", "last")
        }
        return Packing(**moved, batch_sizes=self.batch_sizes, steps=self.steps)


@dataclass(frozen=True)
class Tokens:
    """One side of a batch: B id sequences, flat. Sequence b is ids[offsets[b] : offsets[b] + lengths[b]]."""

    ids: torch.Tensor  # (T,) int64 real tokens only, in batch order
    offsets: torch.Tensor  # (B,) int64 running sum of lengths, offsets[0] = 0
    lengths: torch.Tensor  # (B,) int64, 0 for an empty sequence
    rows: torch.Tensor  # (T,) int64 sequence of each token
    packing: Packing | None = None  # layout "packed", when the batcher made it
    padded: torch.Tensor | None = None  # (B, L) int64, layout "padded", when the batcher made it
    fixed_length: int | None = None  # the length of every sequence when known to be the same (e.g. 1)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @classmethod
    def gather(cls, sequences: TokenSequences, index: torch.Tensor) -> Tokens:
        """The sequences at `index` (B,), their tokens copied into one flat tensor."""
        if sequences.fixed_length is not None:  # e.g. user-item ids: no per-token bookkeeping
            return cls._gather_fixed(sequences, index, sequences.fixed_length)
        # index_select rather than tensor indexing: 2x faster on these 1-D int64 gathers.
        lengths = sequences.lengths.index_select(0, index)  # (B,)
        offsets = torch.cumsum(lengths, 0) - lengths  # (B,)
        total = int(offsets[-1] + lengths[-1]) if len(lengths) else 0
        rows = torch.repeat_interleave(torch.arange(len(lengths)), lengths, output_size=total)  # (T,)
        # Token j of the batch is token j - offsets[b] of sequence b: one gather from the dataset.
        shift = sequences.offsets.index_select(0, index) - offsets  # (B,)
        ids = sequences.values.index_select(0, torch.arange(total).add_(shift.index_select(0, rows)))  # (T,)
        return cls(ids, offsets, lengths, rows)

    @classmethod
    def _gather_fixed(cls, sequences: TokenSequences, index: torch.Tensor, length: int) -> Tokens:
        count = len(index)
        rows = torch.arange(count)  # (B,)
        if length == 1:
            ids = sequences.values.index_select(0, sequences.offsets.index_select(0, index))
            return cls(ids, rows, torch.ones(count, dtype=torch.int64), rows, fixed_length=1)
        starts = sequences.offsets.index_select(0, index)[:, None] + torch.arange(length)  # (B, length)
        return cls(
            sequences.values.index_select(0, starts.reshape(-1)),
            rows * length,
            torch.full((count,), length, dtype=torch.int64),
            rows.repeat_interleave(length),
            fixed_length=length,
        )

    @classmethod
    def from_lists(cls, sequences: list[list[int]]) -> Tokens:
        """For tests and small callers: Tokens of Python lists of ids."""
        return cls.gather(TokenSequences.from_lists(sequences), torch.arange(len(sequences)))

    @classmethod
    def from_padded(cls, ids: torch.Tensor, lengths: torch.Tensor) -> Tokens:
        """Tokens of a (B, L) id matrix whose row b holds lengths[b] ids (the rest is ignored)."""
        mask = torch.arange(ids.shape[1], device=ids.device) < lengths[:, None]  # (B, L)
        rows = torch.repeat_interleave(torch.arange(len(lengths), device=ids.device), lengths)  # (T,)
        return cls(ids[mask], torch.cumsum(lengths, 0) - lengths, lengths, rows)

    @classmethod
    def cat(cls, parts: list[Tokens]) -> Tokens:
        """The sequences of every part, one part after the other (views are made afresh)."""
        lengths = torch.cat([part.lengths for part in parts])  # (B,)
        firsts = [0]
        for part in parts[:-1]:
            firsts.append(firsts[-1] + len(part))
        return cls(
            torch.cat([part.ids for part in parts]),
            torch.cumsum(lengths, 0) - lengths,
            lengths,
            torch.cat([part.rows + first for part, first in zip(parts, firsts, strict=True)]),
        )

    def positions(self) -> torch.Tensor:
        """(T,) int64 position of each token inside its sequence."""
        return torch.arange(self.ids.shape[0], device=self.ids.device) - self.offsets[self.rows]

    def padded_ids(self) -> torch.Tensor:
        """(B, L) ids padded with 0 (a real id: encoders mask by length), L = max(longest, 1)."""
        if self.padded is not None:
            return self.padded
        width = max(int(self.lengths.max()), 1) if len(self) else 1
        out = torch.zeros(len(self) * width, dtype=self.ids.dtype, device=self.ids.device)
        out[self.rows * width + self.positions()] = self.ids
        return out.view(len(self), width)

    def packed(self) -> Packing:
        """The time-major packing (see Packing); made here when the batcher did not make it."""
        if self.packing is not None:
            return self.packing
        lengths = self.lengths.cpu()
        count = len(lengths)
        width = int(lengths.max()) if count else 0
        sorted_rows = torch.sort(lengths, descending=True, stable=True).indices  # (B,)
        rank = torch.empty_like(sorted_rows)
        rank[sorted_rows] = torch.arange(count)
        # Sequences longer than t, for each step t: B minus those of length <= t.
        batch_sizes = count - torch.cumsum(torch.bincount(lengths, minlength=width + 1), 0)[:width]  # (L,)
        starts = torch.cumsum(batch_sizes, 0) - batch_sizes  # (L,) first slot of each step
        rows, positions = self.rows.cpu(), self.positions().cpu()
        position = starts[positions] + rank[rows]  # (T,)
        order = torch.empty_like(position)
        order[position] = torch.arange(len(position))
        last = torch.where(lengths > 0, starts[(lengths - 1).clamp(min=0)] + rank, 0) if width else rank * 0
        device = self.ids.device
        return Packing(
            order=order.to(device),
            position=position.to(device),
            batch_sizes=batch_sizes,
            steps=tuple(batch_sizes.tolist()),
            sorted_rows=sorted_rows.to(device),
            rank=rank.to(device),
            last=last.to(device),
        )

    def with_layout(self, layout: str) -> Tokens:
        """These Tokens with the view `layout` ("flat", "packed" or "padded") made now."""
        if layout == "packed" and self.packing is None:
            return dataclasses.replace(self, packing=self.packed())
        if layout == "padded" and self.padded is None:
            return dataclasses.replace(self, padded=self.padded_ids())
        return self

    def narrow(self, start: int, count: int) -> Tokens:
        """Sequences start .. start + count - 1 (views are not carried over: make them afterwards)."""
        lengths = self.lengths[start : start + count]
        first = int(self.offsets[start]) if count else 0
        total = int(lengths.sum())
        return Tokens(
            self.ids[first : first + total],
            self.offsets[start : start + count] - first,
            lengths,
            self.rows[first : first + total] - start,
            fixed_length=self.fixed_length,
        )

    def to(self, device: torch.device) -> Tokens:
        if self.ids.device == device:
            return self
        return Tokens(
            *(t.to(device, non_blocking=True) for t in (self.ids, self.offsets, self.lengths, self.rows)),
            packing=self.packing.to(device) if self.packing is not None else None,
            padded=self.padded.to(device, non_blocking=True) if self.padded is not None else None,
            fixed_length=self.fixed_length,
        )


@dataclass(frozen=True)
class Batch:
    in0: Tokens  # B sequences, or the D distinct ones of a grouped batch
    in1: Tokens
    labels: torch.Tensor  # (B,)
    # Grouped batches: (B,) int64, the in0 sequence of each pair, non-decreasing (groups are
    # contiguous); None: in0 holds one sequence per pair.
    in0_rows: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def side(self, index: int) -> Tokens:
        return self.in0 if index == 0 else self.in1

    def with_layouts(self, layouts: tuple[str, str]) -> Batch:
        """The views each side's encoder needs (see the module docstring), made once per batch."""
        return Batch(self.in0.with_layout(layouts[0]), self.in1.with_layout(layouts[1]), self.labels, self.in0_rows)

    def narrow(self, start: int, count: int) -> Batch:
        """Pairs start .. start + count - 1 (count >= 1)."""
        end = start + count
        if self.in0_rows is None:
            return Batch(self.in0.narrow(start, count), self.in1.narrow(start, count), self.labels[start:end])
        rows = self.in0_rows[start:end]
        first, last = int(rows[0]), int(rows[-1])  # contiguous: the rows never decrease
        return Batch(
            self.in0.narrow(first, last - first + 1),
            self.in1.narrow(start, count),
            self.labels[start:end],
            rows - first,
        )

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        rows = None if self.in0_rows is None else self.in0_rows.to(device, non_blocking=True)
        return Batch(self.in0.to(device), self.in1.to(device), self.labels.to(device, non_blocking=True), rows)


def make_batch(dataset: PairDataset, index: torch.Tensor, in0_group: torch.Tensor | None = None) -> Batch:
    """The pairs at `index`. in0_group (N,): records of one group hold the same in0 sequence, and
    neighbours of one group in `index` share one copy of it (Batch.in0_rows)."""
    labels = dataset.labels.index_select(0, index)
    in1 = Tokens.gather(dataset.in1, index)
    if in0_group is None or len(index) == 0:
        return Batch(Tokens.gather(dataset.in0, index), in1, labels)
    group = in0_group[index]  # (B,)
    new = torch.ones(len(index), dtype=torch.bool)  # (B,) where a run of one group starts
    new[1:] = group[1:] != group[:-1]
    rows = torch.cumsum(new, 0) - 1  # (B,) index of the pair's in0 among the distinct ones
    return Batch(Tokens.gather(dataset.in0, index[new]), in1, labels, rows)


def in0_views(dataset: PairDataset) -> torch.Tensor:
    """(N,) int64 group of each record: records that read the same in0 view of the data (the same
    offset and length: a record and the negatives `with_negatives` drew for it) share one."""
    in0 = dataset.in0
    if len(dataset) == 0:
        return torch.zeros(0, dtype=torch.int64)
    key = in0.offsets * (int(in0.lengths.max()) + 1) + in0.lengths  # (N,) equal for one in0 view
    return torch.unique(key, return_inverse=True)[1]


# The last evaluation dataset's distinct in0 sequences: the trainer scores the same validation
# data every epoch. A weak reference, so the memo never keeps a dataset alive.
_distinct_memo: tuple[weakref.ref[PairDataset], torch.Tensor | None] | None = None


def repeated_in0(dataset: PairDataset) -> torch.Tensor | None:
    """(N,) int64 the distinct in0 sequence (by content) of each record, or None when no two
    records share one. A multi-label validation file pairs every document with every label."""
    global _distinct_memo
    if _distinct_memo is None or _distinct_memo[0]() is not dataset:
        unique, inverse = dataset.in0.distinct()
        _distinct_memo = (weakref.ref(dataset), inverse if len(unique) < len(dataset) else None)
    return _distinct_memo[1]


def group_batch_size(mini_batch_size: int, sharers: int, world_size: int) -> int:
    """The batch that `sharers` processes slice between them at each step, so that the job's
    `world_size` processes take about `mini_batch_size` records per step in all (each at least one)."""
    return max(math.ceil(mini_batch_size * sharers / world_size), sharers)


def iterate_batches(
    dataset: PairDataset,
    batch_size: int,
    generator: torch.Generator | None = None,
    bucket_width: int = 0,
    grouped: bool = False,
) -> Iterator[Batch]:
    """Batches over the whole dataset; shuffled when a generator is given, in order otherwise.

    grouped: records that share an in0 sequence stay together and their in0 is held once (see
    `grouped_order`; bucket_width does not apply). bucket_width > 0 groups records into length
    buckets first (see `bucket_batches`).
    """
    if grouped:
        group = in0_views(dataset)
        order = grouped_order(group, generator)
        for start in range(0, len(dataset), batch_size):
            yield make_batch(dataset, order[start : start + batch_size], group)
        return
    if bucket_width > 0:
        for index in bucket_batches(dataset, batch_size, bucket_width, generator):
            yield make_batch(dataset, index)
        return
    count = len(dataset)
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    for start in range(0, count, batch_size):
        yield make_batch(dataset, order[start : start + batch_size])


def grouped_order(group: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N,) record order in which the records of each group (`in0_views`) are contiguous: groups
    in a random order and records shuffled inside their group (with `generator`; fixed without)."""
    count = len(group)
    if count == 0:
        return torch.zeros(0, dtype=torch.int64)
    groups = int(group.max()) + 1
    shuffle = generator is not None
    rank = torch.randperm(groups, generator=generator) if shuffle else torch.arange(groups)  # (G,)
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    return order[torch.sort(rank[group[order]], stable=True).indices]


def length_sorted_batches(dataset: PairDataset, batch_size: int) -> Iterator[Batch]:
    """Every record once, in batches of records of similar lengths (for evaluation: the metrics
    are sums, so the order does not matter, and similar lengths keep padded or packed steps short).
    Records that repeat an in0 (a document against every label) sit together and share it."""
    key = dataset.in0.lengths * (int(dataset.in1.lengths.max()) + 1 if len(dataset) else 1) + dataset.in1.lengths
    group = repeated_in0(dataset) if len(dataset) else None
    if group is not None:  # by in0 length, then the in0 itself, then in1 length
        key = (dataset.in0.lengths * (int(group.max()) + 1) + group) * (
            int(dataset.in1.lengths.max()) + 1
        ) + dataset.in1.lengths
    order = torch.sort(key, stable=True).indices  # (N,) by in0 length, then in1 length
    for start in range(0, len(dataset), batch_size):
        yield make_batch(dataset, order[start : start + batch_size], group)


def bucket_batches(
    dataset: PairDataset,
    batch_size: int,
    bucket_width: int,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Record indices of each batch, bucketed by length: within a batch the in0 lengths differ by
    at most bucket_width, and so do the in1 lengths, so padding shrinks to under bucket_width + 1
    tokens per sequence.

    A bucket is a cell of the (len0, len1) grid with sides bucket_width + 1. Records are shuffled
    inside their bucket, each bucket is cut into batches (its last one may be smaller) and the
    batches are shuffled across buckets, all with `generator`; without one the order is fixed.
    """
    count = len(dataset)
    if count == 0:
        return []
    side = bucket_width + 1
    cell0 = dataset.in0.lengths // side  # (N,)
    cell1 = dataset.in1.lengths // side  # (N,)
    key = cell0 * (int(cell1.max()) + 1) + cell1  # (N,) one id per grid cell
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    order = order[torch.sort(key[order], stable=True).indices]  # grouped by cell, shuffled inside
    _, sizes = torch.unique_consecutive(key[order], return_counts=True)  # (cells,)
    # Batch starts: every bucket start, plus every batch_size records inside a bucket.
    bucket_starts = torch.cumsum(sizes, 0) - sizes  # (cells,)
    per_bucket = (sizes + batch_size - 1) // batch_size  # (cells,) batches in each bucket
    first = torch.repeat_interleave(bucket_starts, per_bucket)  # (batches,)
    within = torch.arange(int(per_bucket.sum())) - torch.repeat_interleave(
        torch.cumsum(per_bucket, 0) - per_bucket, per_bucket
    )
    starts = first + within * batch_size  # (batches,)
    ends = torch.minimum(starts + batch_size, torch.repeat_interleave(bucket_starts + sizes, per_bucket))
    batches = torch.randperm(len(starts), generator=generator) if generator is not None else torch.arange(len(starts))
    return [order[int(starts[b]) : int(ends[b])] for b in batches.tolist()]
