"""What every stage records about its cost: the step is metered (:func:`metered`), its usage travels on its output
as metadata, and the IO manager writes it into the run's ledger and puts the stage's totals (and money, with a
price table) on the materialization (:func:`ledger_metadata`), where the UI plots them across runs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import polars as pl
from dagster import MetadataValue, Output

from resources.cost.ledger import CostLedger, stage_of
from resources.cost.prices import PriceTable
from resources.cost.usage import Meter, Usage

STEP_USAGE = "cost/step_usage"
"""Output metadata of a metered step: its own usage (a JSON object), read by the IO manager."""
F = TypeVar("F", bound=Callable[..., Any])


def count_examples(examples: int) -> None:
    """Record how many examples the running stage handled, when that is not its output's row count (a warm-up's
    rows, the pairs DPO trained on, the rows of every student fine-tuning)."""
    if Meter.active is not None:
        Meter.active.count(examples)


def metered(examples_from_rows: bool = True) -> Callable[[F], F]:
    """Decorate an asset or op compute function (under ``@asset``/``@op``) so that its step is measured from
    call to return: the usage is added to its output as :data:`STEP_USAGE`. The models run on the ``runtime``
    resource's device when the step declares one. Examples default to the output's rows (unless the body called
    :func:`count_examples`; ``examples_from_rows=False``: a step that handles none itself, such as a merge)."""

    def decorate(compute: F) -> F:
        @functools.wraps(compute)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            runtime = kwargs.get("runtime")
            with Meter(runtime.torch_device if runtime is not None else None) as meter:
                result = compute(*args, **kwargs)
                value = result.value if isinstance(result, Output) else result
                if examples_from_rows and meter.examples == 0 and isinstance(value, pl.DataFrame):
                    meter.count(value.height)
                usage = {STEP_USAGE: MetadataValue.json(meter.usage().as_dict())}
            if isinstance(result, Output):
                return result.with_metadata({**result.metadata, **usage})
            return Output(result, metadata=usage)

        return wrapper  # type: ignore[return-value]

    return decorate


def ledger_metadata(
    ledger: CostLedger, prices: PriceTable, run_id: str, step_key: str, asset: str | None, step_usage: object
) -> dict[str, Any]:
    """Record one step's usage in the run's ledger; for an asset's output, return the stage's totals (every step
    of its node so far: a graph-backed asset's shards too) as materialization metadata."""
    usage = Usage.from_dict(getattr(step_usage, "value", step_usage))
    ledger.record(run_id, step_key, asset, usage, prices)
    if asset is None:
        return {}
    stage = ledger.stage(run_id, stage_of(step_key))
    totals = stage.usage.as_dict()
    if stage.usage.accelerator_seconds == 0:  # accelerator figures only where the stage ran on CUDA
        totals = {k: v for k, v in totals.items() if k not in ("accelerator_seconds", "peak_accelerator_mb")}
    metadata: dict[str, Any] = {f"cost/{name}": value for name, value in totals.items()}
    metadata["cost/reused"] = stage.usage.reused
    if stage.money is not None:
        metadata["cost/money"] = round(stage.money, 6)
        metadata["cost/price_table"] = MetadataValue.json({"version": prices.version, "currency": prices.currency,
                                                           "prices": prices.content()})
    return metadata
