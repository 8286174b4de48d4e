"""A pretrained checkpoint's own tokenizer (`--tokenizer tokenizer.json`), for encX_network=transformer.

Tokenization stays on the client side of Object2Vec's contract: `prepare` writes the checkpoint's
token ids, and the model only ever sees ids. The file is read with Hugging Face's `tokenizers`
library (Rust; it parses the JSON and runs nothing from it). That library is not in the image's
requirements: install it where you run `prepare` (`pip install tokenizers==0.23.3`, or the
package's `tokenizers` extra).

A `PretrainedTokenizer` takes the place of the regex `Tokenizer`: it turns a text into the
checkpoint's tokens, special tokens included ([CLS] ... [SEP] for BERT), and `vocab` maps those
tokens to the checkpoint's ids, so `vocab.encode(tokenizer(text))` are exactly the ids the
tokenizer itself gives (`ids`): its vocabulary is checked to be one-to-one when loaded.

Padding set in the file (sentence-transformers' files often pad to 128) is switched off: padding
is the trainer's business and is masked there. Truncation: `max_seq_len` > 0 truncates inside the
tokenizer, which keeps the end token; 0 keeps the file's own setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from object2vec.errors import ClientError
from object2vec.prepare.text import Tokenizer, Vocab

MAX_TOKENIZER_BYTES = 64 << 20  # a tokenizer.json is a few MB even for 250k-token vocabularies
INSTALL_HINT = "pip install tokenizers==0.23.3 (or the object2vec[tokenizers] extra)"


@dataclass(frozen=True)
class PretrainedTokenizer:
    path: Path
    backend: Any  # tokenizers.Tokenizer
    vocab: Vocab  # the checkpoint's token -> id, one-to-one

    @classmethod
    def load(cls, path: Path, max_seq_len: int = 0, option: str = "--tokenizer") -> PretrainedTokenizer:
        try:
            from tokenizers import Tokenizer as Backend
        except ImportError as err:
            raise ClientError(f"{option} needs the tokenizers library, which is not installed: {INSTALL_HINT}") from err
        if not path.is_file():
            raise ClientError(f"{option} {path}: no such file; pass the checkpoint's tokenizer.json")
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise ClientError(f"{option} {path}: larger than {MAX_TOKENIZER_BYTES} bytes, not a tokenizer.json")
        try:
            backend = Backend.from_file(str(path))
        except Exception as err:  # the library raises plain Exceptions for unreadable files
            raise ClientError(f"{option} {path}: not a tokenizer.json the tokenizers library can read ({err})") from err
        backend.no_padding()
        if max_seq_len:
            backend.enable_truncation(max_seq_len)
        ids = backend.get_vocab(with_added_tokens=True)
        if len(set(ids.values())) != len(ids):
            raise ClientError(f"{option} {path}: its vocabulary gives one id to several tokens; it cannot be used")
        return cls(path=path, backend=backend, vocab=Vocab(ids=ids, unk_id=None))

    def __call__(self, text: str) -> list[str]:
        return list(self.backend.encode(text).tokens)

    def ids(self, text: str) -> list[int]:
        return list(self.backend.encode(text).ids)

    def suggested_folder(self) -> str:
        """The folder holding tokenizer.json: the checkpoint folder to name in encX_pretrained_model."""
        return self.path.resolve().parent.name


# What the text subcommands tokenize with: words and punctuation, or a checkpoint's own tokens.
TextTokenizer = Tokenizer | PretrainedTokenizer
