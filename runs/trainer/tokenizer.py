"""Tokenizers: our byte-level tokenizer for the tiny models, and loaders for a checkpoint's own.

The byte tokenizer maps every UTF-8 byte to its own id (0..255) and reserves ids above that for
special tokens: padding, begin and end of sequence, and Gemma's two turn markers, which become one
token each so that a rendered conversation stays short. Decoding is the exact inverse of encoding.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

from runs.trainer.errors import ModelError

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
BYTE_TOKENIZER_FILE = "byte_tokenizer.json"


class TextTokenizer(Protocol):
    """What the trainer needs from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def bos_id(self) -> int | None: ...

    @property
    def eos_id(self) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def save(self, directory: Path) -> None:
        """Write the files that let `load_tokenizer(directory)` load this tokenizer again."""
        ...


class ByteTokenizer:
    """UTF-8 bytes plus a handful of special tokens; needs no vocabulary file."""

    PAD = 256
    BOS = 257
    EOS = 258
    START_OF_TURN_ID = 259
    END_OF_TURN_ID = 260
    # Rounded up to a multiple of 8; ids 261..263 are reserved.
    VOCAB_SIZE = 264

    _MARKERS = {START_OF_TURN: START_OF_TURN_ID, END_OF_TURN: END_OF_TURN_ID}
    _SPLIT = re.compile("(" + "|".join(re.escape(marker) for marker in _MARKERS) + ")")

    @property
    def vocab_size(self) -> int:
        return self.VOCAB_SIZE

    @property
    def pad_id(self) -> int:
        return self.PAD

    @property
    def bos_id(self) -> int | None:
        return self.BOS

    @property
    def eos_id(self) -> int | None:
        return self.EOS

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._SPLIT.split(text):
            if not piece:
                continue
            marker = self._MARKERS.get(piece)
            if marker is not None:
                ids.append(marker)
            else:
                ids.extend(piece.encode("utf-8"))
        return ids

    def decode(self, ids: list[int]) -> str:
        names = {value: key for key, value in self._MARKERS.items()}
        out: list[str] = []
        pending = bytearray()
        for token in ids:
            if 0 <= token < 256:
                pending.append(token)
                continue
            if pending:
                out.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if token in names:
                out.append(names[token])
            # pad, bos, eos and reserved ids decode to nothing.
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def save(self, directory: Path) -> None:
        description = {
            "type": "byte",
            "version": 1,
            "vocab_size": self.VOCAB_SIZE,
            "pad_id": self.PAD,
            "bos_id": self.BOS,
            "eos_id": self.EOS,
            "special_tokens": {
                START_OF_TURN: self.START_OF_TURN_ID,
                END_OF_TURN: self.END_OF_TURN_ID,
            },
        }
        (directory / BYTE_TOKENIZER_FILE).write_text(json.dumps(description, indent=2) + "\n")


class HuggingFaceTokenizer:
    """A `tokenizer.json` (Hugging Face fast tokenizer), loaded with the `tokenizers` library."""

    def __init__(self, directory: Path, *, pad_id: int, bos_id: int | None, eos_id: int | None):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - part of the tunix extra
            raise ModelError(f"cannot load tokenizer.json: {exc}") from None
        self._directory = directory
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._pad_id = pad_id
        self._bos_id = bos_id
        self._eos_id = eos_id

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_id(self) -> int | None:
        return self._eos_id

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=False))

    def save(self, directory: Path) -> None:
        _copy_tokenizer_files(self._directory, directory)


class SentencePieceTokenizer:
    """A `tokenizer.model` (SentencePiece)."""

    def __init__(
        self, directory: Path, *, pad_id: int | None, bos_id: int | None, eos_id: int | None
    ):
        try:
            import sentencepiece
        except ImportError as exc:  # pragma: no cover - part of the tunix extra
            raise ModelError(f"cannot load tokenizer.model: {exc}") from None
        self._directory = directory
        self._sp = sentencepiece.SentencePieceProcessor()
        self._sp.Load(str(directory / "tokenizer.model"))
        sp_pad = int(self._sp.pad_id())
        self._pad_id = pad_id if pad_id is not None else (sp_pad if sp_pad >= 0 else 0)
        sp_bos, sp_eos = int(self._sp.bos_id()), int(self._sp.eos_id())
        self._bos_id = bos_id if bos_id is not None else (sp_bos if sp_bos >= 0 else None)
        self._eos_id = eos_id if eos_id is not None else (sp_eos if sp_eos >= 0 else None)

    @property
    def vocab_size(self) -> int:
        return int(self._sp.GetPieceSize())

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_id(self) -> int | None:
        return self._eos_id

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self._sp.EncodeAsIds(text)]

    def decode(self, ids: list[int]) -> str:
        return str(self._sp.DecodeIds(ids))

    def save(self, directory: Path) -> None:
        _copy_tokenizer_files(self._directory, directory)


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    BYTE_TOKENIZER_FILE,
)


def _copy_tokenizer_files(source: Path, target: Path) -> None:
    for name in _TOKENIZER_FILES:
        if (source / name).is_file() and source.resolve() != target.resolve():
            shutil.copyfile(source / name, target / name)


def load_tokenizer(directory: Path, config: dict[str, Any]) -> TextTokenizer:
    """The tokenizer of a checkpoint directory.

    Looked for in this order: `byte_tokenizer.json` (ours), `tokenizer.json` (Hugging Face),
    `tokenizer.model` (SentencePiece). `config` is the directory's config.json, whose
    `pad_token_id`, `bos_token_id` and `eos_token_id` are used when present.
    """
    if (directory / BYTE_TOKENIZER_FILE).is_file():
        try:
            description = json.loads((directory / BYTE_TOKENIZER_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {BYTE_TOKENIZER_FILE}: {exc}") from None
        if not isinstance(description, dict) or description.get("type") != "byte":
            raise ModelError(f"{BYTE_TOKENIZER_FILE} does not describe a byte tokenizer")
        return ByteTokenizer()

    tokenizer_config = _read_json(directory / "tokenizer_config.json")
    eos_id = _first_id(config.get("eos_token_id"))
    bos_id = _first_id(config.get("bos_token_id"))
    add_bos = tokenizer_config.get("add_bos_token")
    if add_bos is False or (
        add_bos is None and not str(config.get("model_type", "")).startswith(("llama", "gemma"))
    ):
        bos_id = None
    pad_id = _first_id(config.get("pad_token_id"))

    if (directory / "tokenizer.json").is_file():
        if pad_id is None:
            pad_id = eos_id if eos_id is not None else 0
        try:
            return HuggingFaceTokenizer(directory, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot load tokenizer.json: {exc}") from None
    if (directory / "tokenizer.model").is_file():
        try:
            return SentencePieceTokenizer(directory, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot load tokenizer.model: {exc}") from None
    raise ModelError(
        f"checkpoint directory {directory} has no tokenizer "
        f"(looked for {BYTE_TOKENIZER_FILE}, tokenizer.json, tokenizer.model)"
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path.name}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
