"""Reading the tunix_sft JSONL, tokenising it with a loss mask, and batching it.

Each line is `{"id", "prompts", "final_answer", "metadata"}`, where `prompts` is the whole
conversation rendered with Gemma's template. The model is trained on all of it, with the loss
masked to the model's turn: the tokens after the last `<start_of_turn>model\\n`, its
`<end_of_turn>` and the end-of-sequence token. Only NumPy is used here, so these functions are
cheap to test.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runs.trainer.errors import DatasetError
from runs.trainer.tokenizer import TextTokenizer

MODEL_TURN = "<start_of_turn>model\n"
MAX_LINE_ERRORS_SHOWN = 1
EVAL_MIN_EXAMPLES = 20
EVAL_FRACTION = 0.1
SPLIT_SEED = 0


@dataclass(frozen=True, slots=True)
class Record:
    line: int
    text: str


@dataclass(frozen=True, slots=True)
class Example:
    """One tokenised conversation: its ids and, per id, whether the loss counts it.

    `total_tokens` is its length before truncation to max_seq_length; `prompt_tokens` the number
    of tokens before the model's turn (where the loss starts).
    """

    tokens: np.ndarray
    loss_mask: np.ndarray
    truncated: bool
    total_tokens: int = 0
    prompt_tokens: int = 0


def read_records(path: Path) -> list[Record]:
    """Read the `prompts` of every line; raise DatasetError naming the first bad line."""
    if not path.exists():
        raise DatasetError(f"dataset file not found: {path}")
    if not path.is_file():
        raise DatasetError(f"dataset path is not a file: {path}")
    try:
        with path.open(encoding="utf-8") as handle:
            records = records_from_lines(handle)
    except UnicodeDecodeError:
        raise DatasetError(f"dataset is not UTF-8 text: {path}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror or exc}") from None
    if not records:
        raise DatasetError(f"dataset is empty: {path}")
    return records


def records_from_lines(lines: Iterable[str]) -> list[Record]:
    """The records of tunix_sft JSONL lines (numbered from 1, blank ones skipped)."""
    records: list[Record] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line:
            records.append(Record(line=number, text=_prompts_of(line, number)))
    return records


def _prompts_of(line: str, number: int) -> str:
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
    return prompts


def encode_example(text: str, tokenizer: TextTokenizer, max_seq_length: int) -> Example:
    """Tokenise one conversation; the loss mask covers the last model turn and EOS."""
    split_at = text.rindex(MODEL_TURN) + len(MODEL_TURN)
    prompt_ids = tokenizer.encode(text[:split_at])
    answer_ids = tokenizer.encode(text[split_at:])
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    head = bos + prompt_ids
    tail = answer_ids + eos
    tokens = np.asarray(head + tail, dtype=np.int32)
    mask = np.concatenate([np.zeros(len(head), dtype=np.int32), np.ones(len(tail), dtype=np.int32)])
    truncated = len(tokens) > max_seq_length
    return Example(
        tokens=tokens[:max_seq_length],
        loss_mask=mask[:max_seq_length],
        truncated=truncated,
        total_tokens=len(tokens),
        prompt_tokens=len(head),
    )


def encode_records(
    records: Sequence[Record], tokenizer: TextTokenizer, max_seq_length: int
) -> list[Example]:
    """Tokenise every record; raise DatasetError for the first over-long one.

    An example is over-long when its model turn starts at or beyond max_seq_length: truncation
    would leave it no token to train on. One that is merely longer is truncated (and counted).
    """
    examples = []
    for record in records:
        example = encode_example(record.text, tokenizer, max_seq_length)
        if not example.loss_mask.any():
            raise DatasetError(overlong_reason(record.line, example, max_seq_length))
        examples.append(example)
    return examples


def overlong_reason(line: int, example: Example, max_seq_length: int) -> str:
    if example.prompt_tokens < max_seq_length:
        return f"dataset line {line} has nothing to train on: its model turn is empty"
    return (
        f"dataset line {line} is over-long: {example.total_tokens} tokens, and its model turn "
        f"starts at token {example.prompt_tokens}, at or beyond max_seq_length {max_seq_length} "
        "(no token left to train on); shorten it or raise training.max_seq_length"
    )


def held_out_indices(count: int) -> list[int]:
    """The positions, in file order, of the examples a run of `count` examples holds out:
    10% (at least one) when there are at least 20, else none. The registry's held-out
    evaluation selects the same lines."""
    if count < EVAL_MIN_EXAMPLES:
        return []
    order = np.random.default_rng(SPLIT_SEED).permutation(count)
    n_eval = max(1, int(count * EVAL_FRACTION))
    return sorted(int(i) for i in order[:n_eval])


def split_train_eval(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """Hold out 10% (at least one) for evaluation when there are at least 20 examples."""
    held_out = set(held_out_indices(len(examples)))
    train_set = [example for i, example in enumerate(examples) if i not in held_out]
    return train_set, [examples[i] for i in sorted(held_out)]


def padded_length(examples: list[Example], max_seq_length: int, multiple: int = 8) -> int:
    """One sequence length for every batch (a single compilation): the longest, rounded up."""
    longest = max(len(example.tokens) for example in examples)
    rounded = -(-longest // multiple) * multiple
    return max(1, min(max_seq_length, rounded))


Batch = dict[str, np.ndarray]


def make_batch(
    examples: list[Example], batch_size: int, length: int, pad_id: int
) -> tuple[Batch, int]:
    """Pad `examples` into arrays of shape [batch_size, length]; return it and its real token count.

    A short (last) batch is filled up with copies of its first rows whose loss mask is zero, so
    every batch has the same shape and the fillers do not change the loss.
    """
    if not examples:
        raise ValueError("a batch needs at least one example")
    tokens = np.full((batch_size, length), pad_id, dtype=np.int32)
    valid = np.zeros((batch_size, length), dtype=np.int32)
    loss = np.zeros((batch_size, length), dtype=np.int32)
    real_tokens = 0
    for row in range(batch_size):
        example = examples[row % len(examples)]
        n = min(len(example.tokens), length)
        tokens[row, :n] = example.tokens[:n]
        valid[row, :n] = 1
        if row < len(examples):
            loss[row, :n] = example.loss_mask[:n]
            real_tokens += n
    return {"input_tokens": tokens, "input_mask": loss, "valid_mask": valid}, real_tokens


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return -(-n_examples // batch_size)


class TrainBatches:
    """The training batches of every epoch, reshuffled per epoch, built lazily.

    `tokens_per_step[i]` is the number of real tokens in the i-th batch handed out so far.
    """

    def __init__(
        self,
        examples: list[Example],
        *,
        batch_size: int,
        length: int,
        pad_id: int,
        num_epochs: int,
        seed: int = 0,
    ) -> None:
        self.examples = examples
        self.batch_size = batch_size
        self.length = length
        self.pad_id = pad_id
        self.num_epochs = num_epochs
        self.seed = seed
        self.tokens_per_step: list[int] = []

    def __len__(self) -> int:
        return self.num_epochs * steps_per_epoch(len(self.examples), self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        self.tokens_per_step = []
        for epoch in range(self.num_epochs):
            order = np.random.default_rng(self.seed + epoch).permutation(len(self.examples))
            for start in range(0, len(order), self.batch_size):
                chunk = [self.examples[int(i)] for i in order[start : start + self.batch_size]]
                batch, count = make_batch(chunk, self.batch_size, self.length, self.pad_id)
                self.tokens_per_step.append(count)
                yield batch


def eval_batches(
    examples: list[Example], *, batch_size: int, length: int, pad_id: int
) -> list[Batch]:
    return [
        make_batch(examples[start : start + batch_size], batch_size, length, pad_id)[0]
        for start in range(0, len(examples), batch_size)
    ]
