"""Object2VecModel: enc0 and enc1 -> comparator -> MLP -> output layer.

Inputs are flat token batches, one `Tokens` per side (data/batching.py); `layouts` names the
view each side's encoder reads, for the batcher to build once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from object2vec.config import Hyperparameters
from object2vec.data.batching import Tokens
from object2vec.errors import ClientError
from object2vec.model.comparator import COSINE_EPS, Comparator
from object2vec.model.encoders import build_encoder
from object2vec.model.transformer import TransformerEncoder, TransformerSpec, check_encoder_fits

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}
EMBEDDING_INIT_STD = 0.1  # small random start; pretrained rows replace it (auxiliary channel)
IN_BATCH_COSINE_SCALE = 20.0  # the initial margin per unit of cosine with in_batch_negatives (1 / temperature)
PAIR_CHUNK = 65_536  # pairs scored at once by pair_margins' general path (bounds its memory)


def make_mlp(input_dim: int, hp: Hyperparameters) -> nn.Sequential:
    """mlp_layers x (Linear -> activation -> dropout), then the output layer."""
    layers: list[nn.Module] = []
    width = input_dim
    for _ in range(hp.mlp_layers):
        layers += [nn.Linear(width, hp.mlp_dim), ACTIVATIONS[hp.mlp_activation](), nn.Dropout(hp.dropout)]
        width = hp.mlp_dim
    layers.append(nn.Linear(width, hp.output_dim))
    return nn.Sequential(*layers)


def make_token_embedding(vocab_size: int, dim: int, sparse: bool) -> nn.Embedding:
    embedding = nn.Embedding(vocab_size, dim, sparse=sparse)
    nn.init.normal_(embedding.weight, std=EMBEDDING_INIT_STD)
    return embedding


class Object2VecModel(nn.Module):
    def __init__(self, hp: Hyperparameters, transformers: Mapping[int, TransformerSpec] | None = None) -> None:
        """`transformers`: the architecture of each transformer encoder (by index), from its
        checkpoint when training, from model_config.json when loading a model."""
        super().__init__()
        self.hp = hp
        self.transformer_specs = {i: spec for i, spec in (transformers or {}).items() if hp.encoder(i).is_transformer}
        missing = [f"enc{i}" for i in (0, 1) if hp.encoder(i).is_transformer and i not in self.transformer_specs]
        if missing:
            raise ClientError(f"{', '.join(missing)}: network=transformer, but no transformer architecture was given")
        sparse = hp.token_embedding_storage_type == "row_sparse"
        tables = [
            None if enc.is_transformer else make_token_embedding(enc.vocab_size, enc.token_embedding_dim, sparse)
            for enc in (hp.enc0, hp.enc1)[: 1 if hp.tied_token_embedding_weight or hp.tied_encoders else 2]
        ]
        # Tied weights: one table, shared by both encoders (equal sizes are checked in config);
        # tied_encoders, or two tied transformers, share the whole encoder (siamese).
        emb0, emb1 = tables[0], tables[-1]
        enc0 = self._encoder(0, emb0)
        siamese = hp.tied_encoders or (hp.tied_token_embedding_weight and hp.enc1.is_transformer)
        self.encoders = nn.ModuleList([enc0, enc0 if siamese else self._encoder(1, emb1)])
        self.comparator = Comparator(hp.comparator_list, hp.enc_dim)
        self.mlp = make_mlp(self.comparator.output_dim, hp)
        if hp.in_batch_negatives and hp.scores_by_cosine:
            # The margin is then scale * cosine + bias. From the default init the scale is about 1,
            # a softmax over cosines that barely ranks (STS-B dev 0.43 after an unlabelled epoch, against
            # 0.67 from here); start it at SimCSE's temperature, 0.05, and let it learn on.
            with torch.no_grad():
                last = self.mlp[-1]
                last.weight.copy_(torch.tensor([[-0.5], [0.5]]) * IN_BATCH_COSINE_SCALE)  # (2, 1)
                last.bias.zero_()

    def start_cosine_regression(self, low: float, high: float) -> None:
        """A regression scored by the cosine alone (comparator_list=cosine, mlp_layers=0): start the
        score at low + (high - low) * cosine, cosine 0 to 1 spanning the labels' range. From the
        default init (a weight and a bias of about +-1) the scale had to grow to the labels' by
        Adam's small steps while the encoders learnt from a score far off: STS-B dev 0.016, against
        0.738 from here (hcnn; 0.710 with an MLP after the cosine)."""
        last = self.mlp[-1]  # Linear(1, 1)
        with torch.no_grad():
            last.weight.fill_(high - low if high > low else 1.0)
            last.bias.fill_(low)

    def _encoder(self, index: int, table: nn.Embedding | None) -> nn.Module:
        enc = self.hp.encoder(index)
        if enc.is_transformer:
            spec = self.transformer_specs[index]
            check_encoder_fits(enc, spec, f"enc{index}_", "its transformer")  # before allocating it
            return TransformerEncoder(enc, spec, self.hp.enc_dim)
        assert table is not None
        return build_encoder(enc, table, self.hp.enc_dim, self.hp.dropout)

    @property
    def siamese(self) -> bool:
        """One encoder object for both sides (tied_encoders, or tied transformers)."""
        return self.encoders[0] is self.encoders[1]

    def token_embedding(self, index: int) -> nn.Embedding:
        return self.encoders[index].embedding

    @property
    def layouts(self) -> tuple[str, str]:
        """The batch view each encoder reads ("flat", "packed", "padded"), in0 then in1."""
        return (self.encoders[0].layout, self.encoders[1].layout)

    def encode(self, index: int, tokens: Tokens) -> torch.Tensor:
        """Embeddings of single objects from encoder `index`: B sequences -> (B, enc_dim)."""
        return self.encoders[index](tokens)

    def forward(
        self,
        in0: Tokens,
        in1: Tokens,
        in0_rows: torch.Tensor | None = None,
        all_pairs: bool = False,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Raw outputs: (B, num_classes) logits for softmax, (B, 1) values for regression.

        in0_rows (B,): in0 holds D distinct sequences and pair i uses in0_rows[i] (a grouped batch:
        each document is encoded once for all its pairs); None: in0 has B sequences, one per pair.
        all_pairs: every in0 against every in1 of the batch instead, (B, B) positive-class margins
        (`pair_margins`, what in-batch negatives rank); through forward so that DDP sees the step.
        gather (with all_pairs): (B, enc_dim) in1 encodings -> (C, enc_dim) candidates, e.g. those of
        every process of a job; the margins are then (B, C)."""
        if self.siamese:  # one encoder: both sides in one forward (half the kernel launches)
            a, b = self.encode(0, Tokens.cat([in0, in1])).split([len(in0), len(in1)])  # (B or D, enc_dim), (B, enc_dim)
        else:
            a = self.encode(0, in0)  # (B or D, enc_dim)
            b = self.encode(1, in1)  # (B, enc_dim)
        if in0_rows is not None:
            a = a.index_select(0, in0_rows)  # (D, enc_dim) -> (B, enc_dim); the backward sums per document
        if not all_pairs:
            return self.score_encodings(a, b)
        return self.pair_margins(a, b if gather is None else gather(b))

    def score_encodings(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Raw outputs of already encoded pairs (comparator + MLP): (B, enc_dim) x 2 -> (B, output_dim).
        Retrieval re-ranks stored candidate encodings with it."""
        return self.mlp(self.comparator(a, b))

    def pair_margins(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Every encoding of `a` against every one of `b`: (B, enc_dim) x (B', enc_dim) -> (B, B')
        margins, the logit of class 1 (a pair) minus that of class 0, each equal to scoring that
        pair alone. A cosine comparator straight into the output layer is one matrix product;
        any other goes through comparator and MLP on B x B' pairs, PAIR_CHUNK at a time."""
        last = self.mlp[-1]  # (num_classes=2, width): the margin is their difference
        if self.hp.scores_by_cosine:
            # normalize clamps each norm at eps, as cosine_similarity does for the pair alone
            cosines = F.normalize(a, dim=1, eps=COSINE_EPS) @ F.normalize(b, dim=1, eps=COSINE_EPS).T  # (B, B')
            return cosines * (last.weight[1, 0] - last.weight[0, 0]) + (last.bias[1] - last.bias[0])
        rows = max(PAIR_CHUNK // max(len(b), 1), 1)
        margins = []
        for start in range(0, len(a), rows):
            block = a[start : start + rows]  # (K, enc_dim)
            pairs = self.score_encodings(
                block.repeat_interleave(len(b), dim=0), b.repeat(len(block), 1)
            )  # (K * B', 2), row k * B' + j: block[k] with b[j]
            margins.append((pairs[:, 1] - pairs[:, 0]).view(len(block), len(b)))  # (K, B')
        return torch.cat(margins)  # (B, B')

    def predict(self, in0: Tokens, in1: Tokens) -> torch.Tensor:
        """Scores as served: softmax probabilities (B, num_classes) or values (B, 1)."""
        return self.scores(self(in0, in1))

    def scores(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw outputs (B, output_dim) -> scores as served (softmax probabilities for classification)."""
        return torch.softmax(raw, dim=1) if self.hp.is_classification else raw
