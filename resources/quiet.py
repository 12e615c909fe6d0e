"""Readable runs: no third-party progress bars in the pipeline's output.

The pipeline reports progress itself, one line per stage
(:func:`resources.generation.interface.rate_logger`: done/total,
rate, ETA); the Hugging Face libraries' tqdm bars would otherwise fill the log with carriage-return redraws.
Trainers are built with ``disable_tqdm=True`` 
(:func:`resources.training.trl_trainers.trainer_arguments`) and vLLM is called
with ``use_tqdm=False``; this module switches off the rest.
"""

from __future__ import annotations

import os

# Inherited by child processes (``accelerate launch`` workers) and read by libraries imported after this:
# huggingface_hub, transformers (through huggingface_hub), datasets, and tqdm itself (every bar in the process).
QUIET_ENVIRONMENT = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def silence_progress_bars() -> None:
    """Turn off the progress bars of transformers, datasets and huggingface_hub in this process and in the
    processes it starts. Idempotent."""
    import datasets
    import huggingface_hub.utils
    import transformers.utils.logging

    os.environ.update(QUIET_ENVIRONMENT)
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
