"""Writes the bundled sample in test_dir/ (synthetic, seeded): does a sentence pair share a topic?

Each of 8 topics owns 25 of the 200 token ids; a sequence draws 3-12 tokens, 85 % from its
topic. Label 1 when in0 and in1 come from the same topic, else 0. The candidates channel holds
40 more sentences to retrieve (top_k): id k is a sentence of topic k // 5. Run it again to
regenerate the same files: `python local_test/make_sample.py`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

VOCAB_SIZE = 200
TOPICS = 8
SPLITS = {"train": 3000, "validation": 400, "test": 400}
CANDIDATES_PER_TOPIC = 5


def sentence(rng: random.Random, topic: int) -> list[int]:
    width = VOCAB_SIZE // TOPICS
    tokens = []
    for _ in range(rng.randint(3, 12)):
        if rng.random() < 0.85:
            tokens.append(topic * width + rng.randrange(width))
        else:
            tokens.append(rng.randrange(VOCAB_SIZE))
    return tokens


def main() -> None:
    root = Path(__file__).resolve().parent / "test_dir" / "input" / "data"
    rng = random.Random(0)
    for split, count in SPLITS.items():
        lines = []
        for _ in range(count):
            topic = rng.randrange(TOPICS)
            same = rng.random() < 0.5
            other = topic if same else (topic + rng.randrange(1, TOPICS)) % TOPICS
            record = {"in0": sentence(rng, topic), "in1": sentence(rng, other), "label": int(same)}
            lines.append(json.dumps(record, separators=(",", ":")))
        (root / split / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    write_candidates(root / "candidates" / "candidates.jsonl")


def write_candidates(path: Path) -> None:
    """The catalogue the demo model retrieves from (its own generator: the splits stay as they were)."""
    rng = random.Random(1)
    lines = []
    for identifier in range(TOPICS * CANDIDATES_PER_TOPIC):
        record = {"id": identifier, "in1": sentence(rng, identifier // CANDIDATES_PER_TOPIC)}
        lines.append(json.dumps(record, separators=(",", ":")))
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
