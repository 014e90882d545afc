"""Expected failures of the trainer, each with the exit code it ends the process with."""

from __future__ import annotations

EXIT_OK = 0
EXIT_TRAINING = 1
EXIT_CONFIG = 2
EXIT_DATASET = 3
EXIT_MODEL = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class TrainerError(Exception):
    """A failure the trainer expects and reports as one line, without a traceback."""

    exit_code = EXIT_TRAINING

    def __init__(self, reason: str) -> None:
        # Keep the reason on one line: it is printed as `error: <reason>`.
        super().__init__(" ".join(str(reason).split()))

    @property
    def reason(self) -> str:
        return str(self.args[0])


class ConfigError(TrainerError):
    """The manifest is missing, unreadable or invalid (or the output directory is refused)."""

    exit_code = EXIT_CONFIG


class DatasetError(TrainerError):
    """The dataset file is missing, unreadable, empty or not valid tunix_sft JSONL."""

    exit_code = EXIT_DATASET


class ModelError(TrainerError):
    """The model id is unknown, or the model (or its tokenizer) could not be loaded."""

    exit_code = EXIT_MODEL


class TrainingError(TrainerError):
    """Training started but failed."""

    exit_code = EXIT_TRAINING
