"""The design key of an effect experiment: which stored results belong to which design.

Every job record carries the key of the design it was measured under; a record under another key is recomputed
(:mod:`~resources.experiment.runner`). The key hashes every setting that changes a result (all blocks of the
profile but ``storage``, less the speed-only settings) and the content of the data files the experiment reads, so
a changed setting or an edited or other task file gives a new key and never mixes with old records.

Design 2 (the 20 records in ``experiments/effect/jobs``) was keyed by its settings alone. To keep those records
valid, settings added since are left out of the key while they hold the value that does what design 2 did
(:data:`ADDED_SINCE_DESIGN_2`), and the data files enter the key only when their content differs from what design 2
ran on (:data:`DESIGN_2_FILES`). A setting added later that changes results must be listed here with its neutral
value, or every stored record is redone (tests/engines/experiment/test_links.py pins the effect profile's key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

DESIGN_VERSION = "2"  # bump when the experiment's procedure changes: results stored under another design are redone
SPEED_ONLY = {"dpo": {"activation_checkpointing"}, "evaluation": {"activation_checkpointing"}}
"""Settings that change memory and speed, not results (tests/engines/training/test_training.py checks the weights
are the same): never in the key, so turning them on or off does not redo stored results."""
ADDED_SINCE_DESIGN_2: dict[str, dict[str, Any]] = {
    "student_dataset": {"select": "none", "select_share": 0.5},
    "synthesis": {"script": "ascii"},
    "pairs": {"review": "off"},
    "influence": {"projection_dim": 16},
    "data": {"pair_review": None},
    "decontamination": {"action": "warn", "ngram": 13, "min_ngram": 8, "rouge_threshold": 0.7},
    "experiment": {"on_task": "arithmetic"},
}
"""Settings added after design 2 ran, with the value that does what design 2 did (no selection in the pipeline's
final dataset; the link-1 arms' size is a new job kind, not a change to design 2's jobs; the arithmetic rule; ASCII
text only; no pair review; decontamination that marks rows but drops none)."""
NOT_DESIGN = {"storage", "automation", "prices"}
"""Blocks that never change a result: where tables go (set per run), when stages are launched, what they cost."""
DESIGN_2_FILES = {
    "seed_prompts": "053855d434fcfc90",
    "reference_set": "fb520d485a8f91e5",
    "heldout_set": "847eb96395a8ce3b",
    "general_heldout": "6befff39dee8e2dc",
}
"""The content (:func:`resources.storage.user_data.content_digest`) of each data file design 2 ran on."""


def changed_files(files: Mapping[str, str]) -> dict[str, str]:
    """The data files (role -> content digest) whose content is not what design 2 ran on."""
    return {role: digest for role, digest in files.items() if DESIGN_2_FILES.get(role) != digest}


def design_key(document: Mapping[str, Any], files: Mapping[str, str]) -> str:
    """The 12-hex-digit key of the design of a profile ``document`` (every setting, defaults included) whose data
    files have the contents ``files`` (role -> content digest)."""
    design: dict[str, Any] = {}
    for block, value in document.items():
        if block in NOT_DESIGN:
            continue
        if isinstance(value, dict):
            neutral = ADDED_SINCE_DESIGN_2.get(block, {})
            value = {name: setting for name, setting in value.items()
                     if name not in SPEED_ONLY.get(block, ()) and not (name in neutral and neutral[name] == setting)}
            if not value and neutral:
                continue
        design[block] = value
    files_changed = changed_files(files)
    parts = [DESIGN_VERSION, design, *([files_changed] if files_changed else [])]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
