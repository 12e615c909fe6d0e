"""The review gate (``pairs.review: required``): the reviewer's sheet as an observed source, and each round's pairs
with the review's decisions joined on, which the teacher then trains on."""

import warnings

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    BetaWarning,
    DataVersion,
    MetadataValue,
    ObserveResult,
    Output,
    asset,
    multi_observable_source_asset,
)
from upath import UPath

from assets.config import ReviewSheet
from assets.output import table_output
from assets.placement import round_key_path
from resources.preference.review import ReviewError, apply_review, read_sheet, review_summary, sheet_version

PAIR_REVIEW = "pair_review"
NO_SHEET, MISSING_SHEET = "no-sheet", "missing"


def _observe(review_sheet: ReviewSheet):  # noqa: ANN202 - yields the observation
    """Observe the sheet: its content hash, or a marker saying no sheet is set or the file is missing."""
    location = review_sheet.location
    if location is None:
        yield ObserveResult(asset_key=PAIR_REVIEW, data_version=DataVersion(NO_SHEET),
                            metadata={"status": "no review sheet: data.pair_review is not set"})
    elif not UPath(location).exists():
        yield ObserveResult(asset_key=PAIR_REVIEW, data_version=DataVersion(MISSING_SHEET),
                            metadata={"status": f"data.pair_review names {location}, which does not exist"})
    else:
        yield ObserveResult(asset_key=PAIR_REVIEW, data_version=DataVersion(sheet_version(location)),
                            metadata={"status": "present", "path": MetadataValue.path(location)})


with warnings.catch_warnings():  # the decorator is beta; the observation is what we want
    warnings.simplefilter("ignore", BetaWarning)
    pair_review = multi_observable_source_asset(specs=[AssetSpec(
        PAIR_REVIEW, group_name="teacher",
        description="The pair review sheet a person filled in (data.pair_review); its data version is the file's "
                    "content hash, so a new or edited review makes the reviewed pairs stale.",
    )], name=PAIR_REVIEW)(_observe)


def build_reviewed_pairs(round_number: int, group: str) -> AssetsDefinition:
    """Round ``round_number``'s pairs with the review's decisions: what its teacher trains on."""

    @asset(key=round_key_path("reviewed_pairs", round_number), group_name=group, kinds={"parquet"},
           ins={"preference_pairs": AssetIn(round_key_path("preference_pairs", round_number))},
           deps=[AssetKey(PAIR_REVIEW)])
    def reviewed_pairs(
        context: AssetExecutionContext, review_sheet: ReviewSheet, preference_pairs: pl.DataFrame
    ) -> Output[pl.DataFrame]:
        """Every pair with its ``decision`` (keep, drop or swap; swapped pairs turned around), ``note`` and
        ``reviewer`` from the sheet at data.pair_review. Fails, naming the file, the rows and what to run, until
        a sheet covers exactly these pairs; the teacher trains on the kept and swapped ones."""
        location = review_sheet.location
        if location is None:
            raise ValueError(
                f"pairs.review is required and no review sheet is set (data.pair_review): the teacher's DPO waits "
                f"for a review of round {round_number}'s {preference_pairs.height} pairs. "
                + review_sheet.commands("review.csv"))
        try:
            sheet = read_sheet(location)
        except ReviewError as exc:
            raise ReviewError(f"{exc}. {review_sheet.commands(location)}") from None
        reviewed = apply_review(preference_pairs, sheet, round_number, location, review_sheet.commands(location))
        summary = review_summary(reviewed)
        context.log.info(f"review of {location}: {summary}")
        return table_output(reviewed, ["pair_id", "decision", "note", "margin", "chosen", "rejected"],
                            review_file=MetadataValue.path(location), **summary)

    return reviewed_pairs
