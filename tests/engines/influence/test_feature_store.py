"""Projected influence on a tiny model: the projection preserves dot products within its expected error, a
projection as large as the model is first-order, and the feature store serves a new reference set without any
candidate backward pass, is invalidated by what changes a feature, and resumes a killed build."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import polars as pl
import pytest
import torch

from resources.influence.engines import ProjectedInfluence, make_influence_engine
from resources.influence.feature_store import FeatureStore
from resources.influence.per_example_grads import PerExampleGradients
from resources.influence.projection import ProjectionSpec, Projector, TensorProjection
from resources.influence.scoring import projected_scores, score_influence
from resources.models import load_causal_lm, resolve_model_source
from resources.storage.tables import TableStore
from resources.training.warm_start import train_warm_student
from tests.engines.influence.test_influence import CANDIDATES, REFERENCE, warm  # noqa: F401 - the fixture
from tests.helpers import influence_params, warmup_params

OTHER_REFERENCE = [("What is 5 plus 1?", "6"), ("What is 7 minus 2?", "5"), ("Double 4.", "8")]


def test_sign_matrices_are_seeded_by_name_and_seed() -> None:
    spec = ProjectionSpec(4)
    a, b = TensorProjection("layer.weight", (30, 12), spec), TensorProjection("layer.weight", (30, 12), spec)
    assert torch.equal(a.right, b.right) and torch.equal(a.buckets, b.buckets) and torch.equal(a.signs, b.signs)
    assert not torch.equal(a.right, TensorProjection("other.weight", (30, 12), spec).right)
    assert not torch.equal(a.right, TensorProjection("layer.weight", (30, 12), ProjectionSpec(4, seed=1)).right)
    assert set((a.right * 2).unique().tolist()) == {-1.0, 1.0} and set(a.signs.unique().tolist()) == {-1.0, 1.0}
    assert (a.k_out, a.k_in, a.features) == (12, 4, 48), "rows sketched to dim x ceil(d_out / d_in) buckets"
    assert TensorProjection("norm.weight", (12,), spec).features == 12, "1-D tensors are kept exact"
    assert TensorProjection("narrow.weight", (3, 12), spec).buckets is None, "a side no wider than its k is kept"


def test_projection_reproduces_dot_products_within_the_expected_error(model_cache: Path) -> None:
    """On the tiny model's parameter shapes: unbiased over seeds, with the error of a dense random projection of the
    same size, ``sqrt((|a|²|b|² + (a·b)²) / k)`` per projected tensor."""
    model, _ = load_causal_lm(resolve_model_source("tiny-random:influence", model_cache))
    named = [(n, p.shape) for n, p in model.named_parameters()]
    generator = torch.Generator().manual_seed(0)
    a = [torch.randn(shape, generator=generator) for _, shape in named]
    b = [0.6 * x + 0.8 * torch.randn(x.shape, generator=generator) for x in a]
    exact = sum(float((x * y).sum()) for x, y in zip(a, b, strict=True))
    errors = []
    for seed in range(40):
        projector = Projector(named, ProjectionSpec(8, seed))
        projected_a, projected_b = (projector.project_tensors(v, 1 << 12).double() for v in (a, b))
        errors.append(float(projected_a @ projected_b) - exact)
    projector = Projector(named, ProjectionSpec(8))
    variance = 0.0
    for tensor, x, y in zip(projector.tensors, a, b, strict=True):
        if tensor.features < x.numel():
            variance += (float(x.norm()) ** 2 * float(y.norm()) ** 2 + float((x * y).sum()) ** 2) / tensor.features
    expected = math.sqrt(variance)
    rms = math.sqrt(sum(e * e for e in errors) / len(errors))
    assert 0.5 * expected < rms < 1.5 * expected, (rms, expected)
    assert abs(sum(errors) / len(errors)) < 4 * expected / math.sqrt(len(errors)), "unbiased"
    assert expected < 0.2 * exact, "the test vectors are correlated enough to be estimated"


@pytest.mark.parametrize("candidate_batch_size", [1, 3])
def test_projection_as_large_as_the_model_equals_first_order(warm, candidate_batch_size: int) -> None:  # noqa: ANN001, F811
    model, optimizer, reference, candidates, pad_id = warm
    optimizer.param_groups[0]["weight_decay"] = 0.1  # the decay term is in the exact null-step part
    first_order = make_influence_engine("first_order", model, optimizer, reference, pad_id, 2).score_all(candidates)
    widest = max(max(p.shape) for p in model.parameters())
    engine = make_influence_engine("projected", model, optimizer, reference, pad_id, 2,
                                   candidate_batch_size=candidate_batch_size, projection=ProjectionSpec(widest))
    assert engine.projector.features == sum(p.numel() for p in model.parameters()), "every tensor kept whole"
    for projected, expected in zip(engine.score_all(candidates), first_order, strict=True):
        assert projected.influence == pytest.approx(expected.influence, abs=1e-6)
        assert projected.loss_after == pytest.approx(expected.loss_after, abs=1e-6)
        assert projected.loss_null_step == pytest.approx(expected.loss_null_step, abs=1e-9)
    small = make_influence_engine("projected", model, optimizer, reference, pad_id, 2, projection=ProjectionSpec(4))
    assert small.projector.features < engine.projector.features / 10
    assert small.score_all(candidates)[0].loss_null_step == pytest.approx(first_order[0].loss_null_step, abs=1e-9)


def test_a_reference_side_scores_features_built_without_a_reference(warm) -> None:  # noqa: ANN001, F811
    model, optimizer, reference, candidates, pad_id = warm
    builder = ProjectedInfluence(model, optimizer, None, pad_id, ProjectionSpec(16), 2, candidate_batch_size=2)
    scores = builder.scores(builder.features(candidates), builder.reference_side(reference))
    direct = ProjectedInfluence(model, optimizer, reference, pad_id, ProjectionSpec(16), 2).score_all(candidates)
    assert [s.influence for s in scores] == pytest.approx([s.influence for s in direct], abs=1e-7)
    with pytest.raises(ValueError, match="without a reference set"):
        builder.score_all(candidates)


@pytest.fixture
def stage(model_cache: Path, tmp_path: Path) -> dict:
    """A warm student saved by the warm-up stage engine, candidates, two reference sets and projected parameters."""
    table = lambda pairs: pl.DataFrame({"instruction": [p[0] for p in pairs],  # noqa: E731
                                        "response": [p[1] for p in pairs]})
    warm_folder = tmp_path / "warm"
    warm_folder.mkdir()
    train_warm_student(resolve_model_source("tiny-random:store", model_cache), table(REFERENCE), warmup_params(1e-3),
                       64, warm_folder, torch.device("cpu"), torch.float32, print)
    candidates = table(CANDIDATES).with_columns(candidate_id=pl.Series([f"c{i}" for i in range(len(CANDIDATES))]))
    params = influence_params(method="projected", projection_dim=8, reference_batch_size=4, max_length=64,
                              chunk_size=2, candidate_batch_size=2)
    return {"warm_folder": str(warm_folder), "candidates": candidates, "reference": table(REFERENCE),
            "other": table(OTHER_REFERENCE), "params": params, "tables": TableStore(str(tmp_path / "cache"))}


@pytest.fixture
def backward_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts candidate backward passes (per-example gradient captures); one entry per pass, its batch size."""
    passes: list[int] = []
    capture = PerExampleGradients.capture

    def counted(self: PerExampleGradients, rows: int, sink, per_example: bool = True):  # noqa: ANN001, ANN202
        if per_example:
            passes.append(rows)
        return capture(self, rows, sink, per_example)

    monkeypatch.setattr(PerExampleGradients, "capture", counted)
    return passes


def run(stage: dict, store: FeatureStore | None, references: list[pl.DataFrame], log=print,  # noqa: ANN001
        **changes: object) -> list[pl.DataFrame]:
    params = dataclasses.replace(stage["params"], **changes)
    return projected_scores(store, stage["warm_folder"], references, stage["candidates"], params,
                            torch.device("cpu"), torch.float32, log)


def store_for(stage: dict, student: str = "student-1", **changes: object) -> FeatureStore:
    params = dataclasses.replace(stage["params"], **changes)
    return FeatureStore(stage["tables"], student, params.feature_settings(torch.float32))


def test_a_new_reference_set_reuses_every_stored_feature(stage: dict, backward_passes: list[int]) -> None:
    store = store_for(stage)
    first = run(stage, store, [stage["reference"]])[0]
    assert sum(backward_passes) == len(CANDIDATES) and first["scored_from"].unique().to_list() == ["computed"]
    backward_passes.clear()
    messages: list[str] = []
    retargeted = run(stage, store, [stage["other"]], messages.append)[0]
    assert backward_passes == [], "no candidate backward pass when only the reference set changed"
    assert f"{len(CANDIDATES)} of {len(CANDIDATES)} candidates served from the store" in messages[0]
    assert retargeted["scored_from"].unique().to_list() == ["feature_store"]
    fresh = run(stage, None, [stage["other"]])[0]
    assert retargeted["influence"].to_list() == pytest.approx(fresh["influence"].to_list(), abs=1e-12)
    assert retargeted["candidate_loss"].to_list() == fresh["candidate_loss"].to_list()
    assert retargeted["influence"].to_list() != first["influence"].to_list()
    # through score_influence, as the stage calls it
    backward_passes.clear()
    scored = score_influence(stage["warm_folder"], stage["other"], stage["candidates"], stage["params"],
                             torch.device("cpu"), torch.float32, print, features=store)
    assert backward_passes == [] and scored.drop("scored_from").equals(retargeted.drop("scored_from"))


def test_several_reference_sets_score_from_one_build(stage: dict, backward_passes: list[int]) -> None:
    """The split-half diagnostic's path: both halves scored from the stored features, as two separate scorings."""
    store = store_for(stage)
    together = run(stage, store, [stage["reference"], stage["other"]])
    assert sum(backward_passes) == len(CANDIDATES), "each candidate built once for both reference sets"
    backward_passes.clear()
    separate = [run(stage, store, [reference])[0] for reference in (stage["reference"], stage["other"])]
    assert backward_passes == []
    for joint, alone in zip(together, separate, strict=True):
        assert joint["influence"].to_list() == alone["influence"].to_list()


def test_the_store_is_invalidated_by_student_candidates_and_projection(
    stage: dict, backward_passes: list[int]
) -> None:
    run(stage, store_for(stage), [stage["reference"]])
    built = len(backward_passes)
    assert sorted(store_for(stage).load().candidate_ids) == [f"c{i}" for i in range(len(CANDIDATES))]
    for other in (store_for(stage, student="student-2"), store_for(stage, projection_dim=4),
                  store_for(stage, param_pattern="layers"), store_for(stage, max_length=32)):
        assert other.key != store_for(stage).key and other.load().candidate_ids == []
    assert FeatureStore(stage["tables"], "student-1", stage["params"].feature_settings(torch.bfloat16)).key \
        != store_for(stage).key
    run(stage, store_for(stage, projection_dim=4), [stage["reference"]], projection_dim=4)
    assert sum(backward_passes[built:]) == len(CANDIDATES), "another projection rebuilds every candidate"
    backward_passes.clear()
    stage["candidates"] = stage["candidates"].with_columns(
        candidate_id=pl.when(pl.col("candidate_id") == "c0").then(pl.lit("c0-edited")).otherwise("candidate_id"),
        response=pl.when(pl.col("candidate_id") == "c0").then(pl.lit("Pear.")).otherwise("response"))
    messages: list[str] = []
    run(stage, store_for(stage), [stage["other"]], messages.append)
    assert sum(backward_passes) == 1, "only the changed candidate is built"
    assert f"{len(CANDIDATES) - 1} of {len(CANDIDATES)} candidates served" in messages[0]


def test_a_killed_build_resumes_from_its_last_chunk(stage: dict, backward_passes: list[int]) -> None:
    store = store_for(stage)

    class Crash(RuntimeError):
        pass

    saved = store.save

    def save_then_crash(ids: list[str], losses: list[float], features: torch.Tensor) -> None:
        saved(ids, losses, features)
        if ids[0] == "c2":  # dies after the second chunk of two is stored
            raise Crash

    store.save = save_then_crash
    with pytest.raises(Crash):
        run(stage, store, [stage["reference"]])
    store.save = saved
    backward_passes.clear()
    messages: list[str] = []
    resumed = run(stage, store, [stage["reference"]], messages.append)[0]
    assert f"4 of {len(CANDIDATES)} candidates served" in messages[0]
    assert sum(backward_passes) == len(CANDIDATES) - 4
    uninterrupted = run(stage, None, [stage["reference"]])[0]
    assert resumed.drop("scored_from").equals(uninterrupted.drop("scored_from"))


def test_the_store_round_trips_on_s3(s3_server) -> None:  # noqa: ANN001
    store = FeatureStore(TableStore("s3://montessori/cache"), "student-1", {"projection": {"dim": 2}})
    assert store.load().candidate_ids == []
    features = torch.randn(3, 5)
    store.save(["a", "b"], [1.0, 2.0], features[:2])
    store.save(["c"], [3.0], features[2:])
    loaded = store.load(["c", "a", "x"])
    assert loaded.candidate_ids == ["c", "a"], "the requested order, unknown ids left out"
    assert torch.equal(loaded.features[1], features[0])
    assert torch.equal(loaded.features[0], features[2]) and loaded.candidate_loss == [3.0, 1.0]
    other = FeatureStore(TableStore("s3://montessori/cache"), "student-2", {"projection": {"dim": 2}})
    assert other.load().features.numel() == 0
