"""A dataset's training records as dry-runs read them, remembered while the dataset is unchanged.

A dry-run runs the trainer's preflight on the records the trainer would be given:
the dataset's whole `tunix_sft` export, read from the database and parsed line by
line (docs/decisions.md#preflight). Fetching and parsing 5,000 lines costs about
a tenth of a second, every dry-run of that dataset alike. A dataset's stored
lines never change and a trace, once deleted, never comes back (trace ids are
new UUIDs), so its records change only when one of its traces is deleted, which
changes how many of them exist. The records are therefore kept in this process
under the dataset's build id and that count (which the dry-run reads anyway):
the next dry-run of the same, unchanged dataset parses nothing.

At most KEPT datasets are kept, and none whose text exceeds MAX_CHARACTERS, so
a server process holds a few tens of megabytes of them at most
(docs/decisions.md#dry-run-records).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict

from datasets.models import Dataset
from datasets.selectors import dataset_export_lines
from runs.trainer.data import Record, records_from_lines

KEPT = 4
MAX_CHARACTERS = 16 << 20

_kept: OrderedDict[tuple[uuid.UUID, int], tuple[Record, ...]] = OrderedDict()
_lock = threading.Lock()


def dataset_records(dataset: Dataset, existing: int) -> tuple[Record, ...]:
    """The records of `dataset`'s export in format `tunix_sft`, `existing` of its traces left.

    Raises what runs.trainer.data.records_from_lines raises for a line the trainer
    would refuse (nothing is kept then), and LookupError if the dataset is gone.
    """
    key = (dataset.build_id, existing)
    with _lock:
        found = _kept.get(key)
        if found is not None:
            _kept.move_to_end(key)
            return found
    lines = dataset_export_lines(key=dataset.key, fmt="tunix_sft")
    records = tuple(records_from_lines(lines))
    if sum(len(record.text) for record in records) <= MAX_CHARACTERS:
        with _lock:
            _kept[key] = records
            while len(_kept) > KEPT:
                _kept.popitem(last=False)
    return records
