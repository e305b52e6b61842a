"""Tokenizers with one interface: characters, and BPE / WordPiece / Unigram subwords.

Special tokens are the same everywhere: ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``.

* ``encode(text, add_bos=, add_eos=)`` never adds specials unless asked; text that
  happens to contain ``"<eos>"`` is encoded as ordinary characters, not as the token
  (except by Unigram, whose model holds the specials as pieces it may match).
* ``decode(ids, skip_special=True)`` drops ``<pad>``/``<bos>``/``<eos>`` wherever they are
  (it does not stop at ``<eos>``: cutting generations is the decoder's job) and always shows
  ``<unk>`` as ``"<unk>"``, so lost text is visible. Ids outside the vocabulary are an error.
* ``save(path_or_dir)`` writes a Hugging Face ``tokenizer.json``; ``load_tokenizer(path)``
  returns the matching class. The character tokenizer's file is a valid HF ``WordLevel``
  tokenizer too (``tokenizers.Tokenizer.from_file`` reads it); its ``on_unknown`` setting is
  kept in the model entry as ``attnkit_on_unknown``, which HF ignores (HF maps unknown
  characters to ``<unk>``).

Round trips: ``CharTokenizer`` gives ``decode(encode(t)) == t`` for text of known
characters. Subword tokenizers give ``decode(encode(t)) == tok.normalize(t)`` when no
``<unk>`` is produced: NFKC (and optional lower-casing) for BPE (byte-level, so never
``<unk>``) and Unigram (one ``"▁"`` prepended to every text, Metaspace without a prefix of
its own, and a decoder that strips exactly that one space, so leading spaces survive); for
WordPiece (BERT pre-tokenizer) the normalised text split at whitespace and punctuation and
joined by single spaces ("It ' s here ."), since WordPiece does not record spacing. For
translation output scored with sacreBLEU use BPE or Unigram, whose decoders restore the
original spacing. ``normalize`` is computed from the tokenizer's own normaliser,
pre-tokenizer and decoder, so it is exact for any loaded file too (a Unigram file that uses
Metaspace's own prefix, ``prepend_scheme="always"``, drops one leading space, and its
``normalize`` says so).

Training is fast (seconds on Multi30k) but Hugging Face's WordPiece and Unigram trainers
are not bit-reproducible (hash-map order, huggingface/tokenizers#1794): train once, save
``tokenizer.json`` and ship it with the model. BPE training is deterministic.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from attnkit.data.datasets import read_lines

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "CharTokenizer",
    "SubwordTokenizer",
    "TextTokenizer",
    "load_tokenizer",
]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
TOKENIZER_FILE = "tokenizer.json"
_CHAR_SPLIT = r"[\s\S]"  # every code point is its own pre-token
_ON_UNKNOWN_KEY = "attnkit_on_unknown"  # in tokenizer.json's "model"; HF ignores it
_METASPACE = "\u2581"  # "▁", SentencePiece's word-boundary mark
OnUnknown = Literal["unk", "error"]
SubwordKind = Literal["bpe", "wordpiece", "unigram"]


def _as_int_list(ids: Any) -> list[int]:
    """Ids from a list, numpy array or 1-D tensor."""
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    if ids and isinstance(ids[0], list):
        raise ValueError(f"expected a 1-D id sequence; got nested lists of length {len(ids)}")
    return ids


def _tokenizer_file(path: str | os.PathLike) -> Path:
    """``path`` itself if it names a ``.json`` file, else ``path / tokenizer.json``."""
    path = Path(path)
    return path if path.suffix == ".json" else path / TOKENIZER_FILE


class TextTokenizer(ABC):
    """The common interface; subclasses implement ``_encode``, ``_decode`` and ``to_json``.

    Code that only needs ``encode``/``decode`` and the special ids takes a ``TextTokenizer``,
    so a character and a subword tokenizer are interchangeable.

    Example:
        >>> from attnkit.data import CharTokenizer, TextTokenizer
        >>> tok: TextTokenizer = CharTokenizer.train(["abc"])
        >>> isinstance(tok, TextTokenizer), tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id
        (True, 0, 1, 2, 3)
        >>> tok.encode_batch(["cab", "b"], add_eos=True)
        [[6, 4, 5, 2], [5, 2]]
        >>> tok.decode_batch([[1, 6, 4, 5, 2, 0], [5, 2, 0, 0, 0, 0]])  # specials dropped
        ['cab', 'b']
    """

    pad_id: ClassVar[int] = PAD_ID
    bos_id: ClassVar[int] = BOS_ID
    eos_id: ClassVar[int] = EOS_ID
    unk_id: ClassVar[int] = UNK_ID
    special_tokens: ClassVar[tuple[str, ...]] = SPECIAL_TOKENS

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, specials included (ids are ``0 .. vocab_size - 1``)."""

    @abstractmethod
    def _encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def _decode(self, ids: list[int]) -> str: ...

    @abstractmethod
    def to_json(self) -> str:
        """The Hugging Face ``tokenizer.json`` content."""

    def normalize(self, text: str) -> str:
        """The text as ``decode(encode(text))`` gives it back when no ``<unk>`` is produced.

        See the module docstring for what that is for each kind.
        """
        return text

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of ``text``, optionally wrapped in ``<bos>`` / ``<eos>``."""
        return self._wrap(self._encode(text), add_bos, add_eos)

    def encode_batch(
        self, texts: Sequence[str], *, add_bos: bool = False, add_eos: bool = False
    ) -> list[list[int]]:
        """``encode`` for each text."""
        return [self.encode(text, add_bos=add_bos, add_eos=add_eos) for text in texts]

    def decode(self, ids: Any, *, skip_special: bool = True) -> str:
        """Text of a 1-D id sequence (list, array or tensor); see the module docstring."""
        ids = self._checked(_as_int_list(ids))
        if skip_special:
            ids = [i for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)]
        return self._decode(ids)

    def decode_batch(self, batch: Any, *, skip_special: bool = True) -> list[str]:
        """``decode`` for each row of a ``(B, L)`` tensor or a list of id lists."""
        rows = batch.tolist() if hasattr(batch, "tolist") else batch
        return [self.decode(row, skip_special=skip_special) for row in rows]

    def save(self, path_or_dir: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` (into ``path_or_dir`` unless it ends in ``.json``)."""
        path = _tokenizer_file(path_or_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    def _wrap(self, ids: list[int], add_bos: bool, add_eos: bool) -> list[int]:
        return [BOS_ID] * add_bos + ids + [EOS_ID] * add_eos

    def _checked(self, ids: list[int]) -> list[int]:
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"id {bad} is outside the vocabulary [0, {self.vocab_size})")
        return ids


class CharTokenizer(TextTokenizer):
    """One id per Unicode code point: specials ``0..3``, then ``chars`` in order.

    ``on_unknown="unk"`` maps characters outside the vocabulary to ``<unk>``;
    ``on_unknown="error"`` raises ``ValueError`` naming the character and its position.

    Example:
        >>> from attnkit.data import CharTokenizer
        >>> tok = CharTokenizer.train(["hello", "world"])  # sorted characters: d e h l o r w
        >>> tok.vocab_size  # 4 specials + 7 characters
        11
        >>> ids = tok.encode("hold", add_bos=True, add_eos=True)
        >>> ids, tok.decode(ids)
        ([1, 6, 8, 7, 4, 2], 'hold')
        >>> tok.decode(tok.encode("held!"))  # '!' was never seen
        'held<unk>'
    """

    def __init__(self, chars: Iterable[str], *, on_unknown: OnUnknown = "unk"):
        chars = list(chars)
        if on_unknown not in ("unk", "error"):
            raise ValueError(f"on_unknown must be 'unk' or 'error'; got {on_unknown!r}")
        wrong = [c for c in chars if len(c) != 1]
        if wrong or len(set(chars)) != len(chars):
            raise ValueError(f"chars must be distinct single characters; got {wrong or chars}")
        self.chars = chars
        self.on_unknown = on_unknown
        self._itos = [*SPECIAL_TOKENS, *chars]
        self._stoi = {c: i for i, c in enumerate(chars, start=len(SPECIAL_TOKENS))}

    @classmethod
    def train(cls, texts: Iterable[str], *, on_unknown: OnUnknown = "unk") -> CharTokenizer:
        """A vocabulary of every character in ``texts`` (sorted, so it is reproducible)."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen), on_unknown=on_unknown)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def _encode(self, text: str) -> list[int]:
        get = self._stoi.get
        ids = [get(c, UNK_ID) for c in text]
        if self.on_unknown == "error" and UNK_ID in ids:
            position = ids.index(UNK_ID)
            raise ValueError(
                f"unknown character {text[position]!r} (U+{ord(text[position]):04X}) at "
                f"position {position} of {text[:60]!r}"
            )
        return ids

    def _decode(self, ids: list[int]) -> str:
        return "".join(self._itos[i] for i in ids)

    def to_json(self) -> str:
        vocab = {token: i for i, token in enumerate(self._itos)}
        hf = HFTokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS[UNK_ID]))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(_CHAR_SPLIT), behavior="isolated")
        hf.decoder = decoders.Fuse()
        hf.add_special_tokens(list(SPECIAL_TOKENS))
        data = json.loads(hf.to_str())
        data["model"][_ON_UNKNOWN_KEY] = self.on_unknown
        return json.dumps(data, indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "tokenizer.json") -> CharTokenizer:
        """Rebuild from a parsed ``tokenizer.json`` written by ``to_json``.

        A file without ``attnkit_on_unknown`` (written before it was stored) loads as
        ``on_unknown="unk"``.
        """
        by_id = sorted((i, token) for token, i in data["model"]["vocab"].items())
        tokens = [token for _, token in by_id]
        if [i for i, _ in by_id] != list(range(len(by_id))) or tuple(tokens[:4]) != SPECIAL_TOKENS:
            raise ValueError(f"{source}: not an attnkit character vocabulary (ids/specials)")
        on_unknown = data["model"].get(_ON_UNKNOWN_KEY, "unk")
        if on_unknown not in ("unk", "error"):
            raise ValueError(
                f"{source}: {_ON_UNKNOWN_KEY} must be 'unk' or 'error'; got {on_unknown!r}"
            )
        return cls(tokens[len(SPECIAL_TOKENS) :], on_unknown=on_unknown)


def _subword_parts(kind: str, vocab_size: int, min_frequency: int) -> tuple[Any, Any, Any, Any]:
    """``(model, pre_tokenizer, decoder, trainer)`` for one subword kind.

    Unigram also needs ``normalizers.Prepend("▁")`` last in its normaliser, which
    ``SubwordTokenizer.train`` adds (see the module docstring).
    """
    unk = SPECIAL_TOKENS[UNK_ID]
    common = {"vocab_size": vocab_size, "special_tokens": list(SPECIAL_TOKENS)}
    common["show_progress"] = False
    if kind == "bpe":  # byte-level: every string is encodable, spacing is kept
        trainer = trainers.BpeTrainer(
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            **common,
        )
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
        return models.BPE(unk_token=unk), byte_level, decoders.ByteLevel(), trainer
    if kind == "wordpiece":
        # cleanup=False: HF's cleanup also rewrites " do not" to " don't".
        trainer = trainers.WordPieceTrainer(min_frequency=min_frequency, **common)
        model = models.WordPiece(unk_token=unk)
        return model, pre_tokenizers.BertPreTokenizer(), decoders.WordPiece(cleanup=False), trainer
    if kind == "unigram":
        # Metaspace's own prefix ("always") is skipped for text that starts with a space,
        # and its decoder then strips that space: prepend "▁" unconditionally instead and
        # strip exactly one leading space after decoding (the Llama tokenizer's pairing).
        trainer = trainers.UnigramTrainer(unk_token=unk, **common)
        decoder = decoders.Sequence(
            [decoders.Metaspace(prepend_scheme="never"), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        return models.Unigram(), pre_tokenizers.Metaspace(prepend_scheme="never"), decoder, trainer
    raise ValueError(f"kind must be 'bpe', 'wordpiece' or 'unigram'; got {kind!r}")


def _training_texts(texts_or_files: Iterable[str | os.PathLike]) -> Iterable[str]:
    """``str`` items are texts; ``os.PathLike`` items are files (plain or ``.gz``) of lines."""
    for item in texts_or_files:
        if isinstance(item, str):
            yield item
        else:
            yield from read_lines(item)


class SubwordTokenizer(TextTokenizer):
    """A Hugging Face ``tokenizers`` BPE / WordPiece / Unigram model behind the common interface.

    Example:
        >>> from attnkit.data import SubwordTokenizer
        >>> texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"]
        >>> tok = SubwordTokenizer.train(texts, kind="bpe", vocab_size=300, min_frequency=1)
        >>> tok.kind, tok.vocab_size <= 300
        ('bpe', True)
        >>> tok.hf.encode("the cat").tokens  # byte-level BPE marks a leading space as 'Ġ'
        ['the', 'Ġcat']
        >>> tok.decode(tok.encode("the cat sat", add_bos=True, add_eos=True))
        'the cat sat'
    """

    _KINDS: ClassVar[dict[str, str]] = {
        "BPE": "bpe",
        "WordPiece": "wordpiece",
        "Unigram": "unigram",
    }

    def __init__(self, hf: HFTokenizer, source: str = "tokenizer") -> None:
        model_type = json.loads(hf.to_str())["model"]["type"]
        if model_type not in self._KINDS:
            raise ValueError(f"{source}: unsupported model type {model_type!r}")
        for expected, token in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(token) != expected:
                raise ValueError(
                    f"{source}: {token} has id {hf.token_to_id(token)}; attnkit needs "
                    f"{dict(zip(SPECIAL_TOKENS, range(4), strict=True))}"
                )
        hf.encode_special_tokens = True  # "<eos>" inside a text is text (not serialised)
        self.hf = hf
        self.kind: SubwordKind = self._KINDS[model_type]  # type: ignore[assignment]

    @classmethod
    def train(
        cls,
        texts_or_files: Iterable[str | os.PathLike],
        kind: SubwordKind = "bpe",
        vocab_size: int = 8000,
        *,
        lowercase: bool = False,
        min_frequency: int = 2,
    ) -> SubwordTokenizer:
        """Train on texts (``str``) and/or files (``pathlib.Path``, one text per line, ``.gz`` ok).

        Normalisation is NFKC (then lower-casing if asked). ``min_frequency`` applies to
        BPE/WordPiece merges. Unigram may end below ``vocab_size`` on small corpora.
        """
        items = list(texts_or_files)
        first = items[0] if items else None
        if isinstance(first, str) and "\n" not in first and os.path.isfile(first):
            raise ValueError(
                f"{first!r} names a file but str items are texts: pass Path({first!r})"
            )
        model, pre_tokenizer, decoder, trainer = _subword_parts(kind, vocab_size, min_frequency)
        hf = HFTokenizer(model)
        steps = [normalizers.NFKC()] + [normalizers.Lowercase()] * lowercase
        steps += [normalizers.Prepend(_METASPACE)] * (kind == "unigram")
        hf.normalizer = normalizers.Sequence(steps)
        hf.pre_tokenizer = pre_tokenizer
        hf.decoder = decoder
        hf.train_from_iterator(_training_texts(items), trainer=trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def normalize(self, text: str) -> str:
        # The decoder applied to the pre-tokens: a model only splits pre-tokens into
        # pieces, which these decoders join back the same way.
        hf = self.hf
        if hf.normalizer is not None:
            text = hf.normalizer.normalize_str(text)
        pieces = [text]
        if hf.pre_tokenizer is not None:
            pieces = [piece for piece, _ in hf.pre_tokenizer.pre_tokenize_str(text)]
        # without a decoder, HF joins tokens with spaces
        return hf.decoder.decode(pieces) if hf.decoder is not None else " ".join(pieces)

    def _encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(
        self, texts: Sequence[str], *, add_bos: bool = False, add_eos: bool = False
    ) -> list[list[int]]:
        encodings = self.hf.encode_batch(list(texts), add_special_tokens=False)
        return [self._wrap(e.ids, add_bos, add_eos) for e in encodings]

    def _decode(self, ids: list[int]) -> str:
        # skip_special_tokens=False keeps <unk> visible; pad/bos/eos were removed already.
        return self.hf.decode(ids, skip_special_tokens=False)

    def to_json(self) -> str:
        return self.hf.to_str(pretty=True)


def load_tokenizer(path: str | os.PathLike) -> TextTokenizer:
    """Load a ``tokenizer.json`` (or a directory holding one) as the matching class.

    Raises ``FileNotFoundError`` when there is no such file and ``ValueError`` when the
    file is not a ``tokenizer.json`` attnkit can use.

    Example:
        >>> import tempfile
        >>> from attnkit.data import CharTokenizer, load_tokenizer
        >>> folder = tempfile.mkdtemp()
        >>> saved = CharTokenizer.train(["to be or not to be"])
        >>> saved.save(folder).name
        'tokenizer.json'
        >>> loaded = load_tokenizer(folder)
        >>> type(loaded).__name__, loaded.encode("to be") == saved.encode("to be")
        ('CharTokenizer', True)
    """
    file = _tokenizer_file(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such tokenizer file")
    text = file.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        model_type = data["model"]["type"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{file}: not a tokenizer.json ({err})") from None
    pre_tokenizer = data.get("pre_tokenizer") or {}
    if model_type == "WordLevel" and pre_tokenizer.get("type") == "Split":
        return CharTokenizer.from_json(data, str(file))
    return SubwordTokenizer(HFTokenizer.from_str(text), str(file))
