"""The items of a tunix_sft dataset, and their answers generated with Tunix's sampler.

An item's prompt is its ``prompts`` text up to and including the last ``<start_of_turn>model\\n``;
its expected answer is the line's ``final_answer`` when present, else the text of that model turn
(up to ``<end_of_turn>``). Generation uses ``tunix.generate.sampler.Sampler``, ``batch_size``
prompts per call, all left-padded to one prompt length and every call filled to one batch size,
so JAX compiles the prefill and the decoding loop once per evaluation. JAX and Tunix are imported
only when a Generator is built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluations.engine.config import Generation
from runs.trainer.data import MODEL_TURN
from runs.trainer.errors import DatasetError, ModelError
from runs.trainer.tokenizer import END_OF_TURN, TextTokenizer

# Prompts are padded to a multiple of this many tokens (the longest prompt of the dataset).
PROMPT_LENGTH_MULTIPLE = 16
# Stops a sampler that has no stop token at all: no real token has a negative id.
NO_STOP_TOKEN = -1


@dataclass(frozen=True, slots=True)
class Item:
    """One dataset line to evaluate (``line``: its 1-based line number in the file)."""

    index: int
    line: int
    prompt: str
    expected: str


def read_items(path: Path) -> list[Item]:
    """Every item of the tunix_sft file at ``path``; DatasetError names the first bad line."""
    if not path.exists():
        raise DatasetError(f"dataset file not found: {path}")
    if not path.is_file():
        raise DatasetError(f"dataset path is not a file: {path}")
    items: list[Item] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.strip()
                if line:
                    items.append(_item(line, number, len(items)))
    except UnicodeDecodeError:
        raise DatasetError(f"dataset is not UTF-8 text: {path}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror or exc}") from None
    if not items:
        raise DatasetError(f"dataset is empty: {path}")
    return items


def _item(line: str, number: int, index: int) -> Item:
    try:
        obj = json.loads(line)
    except ValueError:
        raise DatasetError(f"dataset line {number} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"dataset line {number} is not a JSON object")
    prompts = obj.get("prompts")
    if not isinstance(prompts, str) or not prompts.strip():
        raise DatasetError(
            f"dataset line {number} has no 'prompts' string (tunix_sft format expected)"
        )
    if MODEL_TURN not in prompts:
        raise DatasetError(f"dataset line {number}: 'prompts' has no model turn ({MODEL_TURN!r})")
    split_at = prompts.rindex(MODEL_TURN) + len(MODEL_TURN)
    answer = obj.get("final_answer")
    if answer is None or answer == "":
        expected = prompts[split_at:].split(END_OF_TURN, 1)[0]
    elif isinstance(answer, str | int | float) and not isinstance(answer, bool):
        expected = str(answer)
    else:
        raise DatasetError(f"dataset line {number}: 'final_answer' must be a string or a number")
    return Item(index=index, line=number, prompt=prompts[:split_at], expected=expected)


class SamplerTokenizer:
    """Our tokenizer (runs.trainer.tokenizer.TextTokenizer) as Tunix's sampler calls it.

    The sampler's TokenizerAdapter accepts any object with the methods ``encode``, ``decode``,
    ``bos_id``, ``eos_id`` and ``pad_id``; ours has ids as properties, and a None BOS (the
    sampler adds BOS only when ``bos_id()`` is truthy).
    """

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self._tokenizer = tokenizer

    def encode(self, text: str, **_: Any) -> list[int]:
        return self._tokenizer.encode(text)

    def decode(self, ids: list[int], **_: Any) -> str:
        return self._tokenizer.decode([int(i) for i in ids])

    def bos_id(self) -> int | None:
        return self._tokenizer.bos_id

    def eos_id(self) -> int | None:
        return self._tokenizer.eos_id

    def pad_id(self) -> int:
        return self._tokenizer.pad_id


def stop_tokens(tokenizer: TextTokenizer) -> list[int]:
    """End of sequence, and ``<end_of_turn>`` when the tokenizer has it as one token."""
    stops = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    marker = tokenizer.encode(END_OF_TURN)
    if len(marker) == 1 and marker[0] not in stops:
        stops.append(marker[0])
    return stops or [NO_STOP_TOKEN]


def prompt_length(lengths: Sequence[int], multiple: int = PROMPT_LENGTH_MULTIPLE) -> int:
    """The one padded prompt length: the longest prompt rounded up to ``multiple``."""
    longest = max(lengths)
    return max(multiple, -(-longest // multiple) * multiple)


class Generator:
    """Generates answers with Tunix's Sampler for one model, prompt length and batch size."""

    def __init__(
        self,
        model: Any,
        tokenizer: TextTokenizer,
        settings: Generation,
        *,
        prompts: Sequence[str],
    ) -> None:
        """``prompts``: every prompt the generator will see (their longest sets the padding)."""
        from tunix.generate import sampler as sampler_lib

        self.settings = settings
        self.stops = stop_tokens(tokenizer)
        adapter = SamplerTokenizer(tokenizer)
        config: Any = getattr(model, "config", None)
        try:
            cache = sampler_lib.CacheConfig(
                cache_size=1,  # replaced below, once the prompt length is known
                num_layers=int(config.num_layers),
                num_kv_heads=int(config.num_kv_heads),
                head_dim=int(config.head_dim),
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise ModelError(
                f"cannot generate with {type(model).__name__}: no usable model config ({exc})"
            ) from None
        self.sampler = sampler_lib.Sampler(model, adapter, cache)
        # The sampler's own tokenisation (BOS included) decides the prompt lengths.
        self.prompt_length = prompt_length([len(self.sampler.tokenize(p)) for p in prompts])
        self.sampler.cache_config = sampler_lib.CacheConfig(
            cache_size=self.prompt_length + settings.max_new_tokens,
            num_layers=cache.num_layers,
            num_kv_heads=cache.num_kv_heads,
            head_dim=cache.head_dim,
        )
        self.batch_size = min(settings.batch_size, len(prompts))
        self.calls = 0

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """The answers to at most ``batch_size`` prompts (a short batch is filled with copies,
        whose answers are dropped, so every call has the same shape)."""
        if not 0 < len(prompts) <= self.batch_size:
            raise ValueError(f"expected 1..{self.batch_size} prompts, got {len(prompts)}")
        batch = list(prompts) + [prompts[-1]] * (self.batch_size - len(prompts))
        sampling: dict[str, Any] = {}
        if self.settings.temperature > 0:
            import jax

            # One key per call, so batches do not repeat each other's randomness.
            key = jax.random.fold_in(jax.random.PRNGKey(self.settings.seed), self.calls)
            sampling = {"temperature": self.settings.temperature, "top_p": 1.0, "seed": key}
        self.calls += 1
        output = self.sampler(
            batch,
            max_generation_steps=self.settings.max_new_tokens,
            max_prompt_length=self.prompt_length,
            echo=False,
            eos_tokens=self.stops,
            **sampling,
        )
        return [str(text) for text in output.text[: len(prompts)]]
