"""``montessori experiment``: does the influence-tuned teacher teach better? The controlled effect experiment.

Arms (pre-registered in ``{out}/RESULTS.md``; :func:`resources.experiment.effect_design.effect_preregistration`):
``montessori`` (teacher DPO on influence pairs), the controls ``dpo_random`` and ``dpo_student_loss`` (DPO on
pairs from the random and the student-loss signal) and ``self_instruct`` (the untuned teacher). Replicate r
runs the profile with ``runtime.seed`` = the profile's seed + r:

1. Datasets. The three DPO arms are three pipeline runs of the profile that differ only in ``pairs.signal``,
   each materializing everything up to ``student_dataset`` and ``baseline_dataset``; the Self-Instruct arm
   materializes ``baseline_dataset`` (same final prompts, untuned teacher) and runs first, so the others read
   the baseline's text from the generation cache. Each run keeps its tables in its own folder,
   while generation chunks and influence scores go to one shared content-keyed cache (``storage.cache``):
   the round's candidates and influence scores are computed once per replicate and read back by the other
   runs; the warm student is trained once per replicate and reused by the other runs from the checkpoint store
   (:mod:`resources.training.warm_student_cache`: same inputs, same weights).
2. Measures. The replicate's four datasets are cut to the smallest one's size; the student is fine-tuned on
   the arm's (the profile's ``evaluation`` SFT settings, seed = the replicate's seed) and its loss is
   measured on the task held-out set (the profile's ``data.heldout_set``) and on the general one
   (``data/heldout_set.jsonl``); the on-task share of the arm's final instructions is counted. For reading
   a null result each record also holds the arm's pair count and the share of its final instructions that
   are identical to the untuned teacher's.

Links 1 and 2 of the method's chain (:mod:`resources.experiment.links_design`, pre-registered in their own sections
of RESULTS.md) reuse each replicate's data: the round's candidates and influence scores (the influence arm's
``influence_scores``: the pool the selection arms choose from with :func:`resources.preference.selection.select_rows`,
the function behind ``student_dataset.select``) and the four final datasets, scored by the replicate's warm student
against the task reference set before its checkpoints are deleted (the teacher shift).

The task is the profile's (``data.reference_set``, ``data.heldout_set``, ``experiment.on_task``) or the command's
``--task-reference``, ``--task-heldout`` and ``--on-task``; the design key covers the settings and the data files'
contents (:mod:`resources.experiment.design_key`).

Every finished (study, arm, replicate) is stored under ``{out}/jobs`` and every arm's dataset under ``{out}/work``,
so a killed experiment resumes where it stopped. The report (RESULTS.md, results.json, effect.png, link1.png,
link2.png) is written from every finished job at the end.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml
from dagster import AssetSelection, DagsterInstance
from pydantic import ValidationError

from assets.config import PROJECT_ROOT, DataSettings, resolve_path
from assets.influence import influence_against, score_candidates
from dagster_project.definitions import build_definitions
from dagster_project.resources import build_resources
from dagster_project.runs import ensure_dagster_home, execute_pipeline, run_summary
from dagster_project.settings import Settings, SettingsError, load_settings
from resources.evaluation.student_sft import MONTESSORI, equal_size, fine_tune, heldout_loss
from resources.experiment.design_key import changed_files, design_key
from resources.experiment.diagnostics import (
    TeacherLogprobShift,
    dpo_summary,
    score_correlations,
    split_half_reliability,
)
from resources.experiment.effect_design import EFFECT_ARMS, SELF_INSTRUCT, SIGNALS, effect_preregistration
from resources.experiment.links_design import (
    EFFECT_BUDGET,
    HEADINGS,
    LINK1,
    LINK2,
    SELECTION_ARMS,
    link1_preregistration,
    link2_preregistration,
    shift_metrics,
)
from resources.experiment.on_task import on_task_rule, on_task_share
from resources.experiment.preregistration import Preregistration, ensure_preregistered
from resources.experiment.results import Study, write_studies
from resources.experiment.runner import Job, plan_studies, run_jobs
from resources.models import load_tokenizer
from resources.preference.pairs import score_column
from resources.preference.selection import select_rows
from resources.storage.tables import TableStore, publish_bytes
from resources.storage.user_data import content_digest, load_examples
from resources.synthesis.synthesize import few_shot_prompts

TITLE = "Does the tuned teacher teach better? A controlled experiment"
GENERAL_HELDOUT = DataSettings().heldout_set
DIAGNOSTICS = ("teacher_logprob_shift", "dpo_last_epoch_margin", "dpo_last_epoch_accuracy", "split_half_reliability",
               "influence_vs_response_tokens", "influence_vs_own_loss")
DETAILS = ("signal", "pairs", "identical_to_untuned", "dataset_rows", "train_rows", *DIAGNOSTICS)
LINK1_DETAILS = ("rule", "pool_rows", "train_rows", "selected_mean_influence", "on_task_share")
LINK2_DETAILS = ("shift_rows", "baseline", "same_data_as_effect_record", "same_facts_as_effect_record")
# What an arm's data determine, compared by same_facts_as_effect_record (floats to 1e-9)
DATA_FACTS = ("dataset_rows", "on_task_share", "pairs", "dpo_last_epoch_margin", "teacher_logprob_shift")
ROUND_TABLES = ("influence_scores", "warm_student", "reference_set")  # of the influence arm's run, for the links
ROUND_FILE, SHIFT_FILE = "round.json", "shift.parquet"
SHIFT_COLUMNS = ["candidate_id", "prompt_id", "instruction", "response"]


def task_path(path: str) -> str:
    """A task file given on the command line: relative to the working directory (a path inside the project is kept
    relative to the project root, as profiles write them); URLs as given. Raises SettingsError when it does not
    exist."""
    if "://" in path:
        return path
    local = Path(path).expanduser().resolve()
    if not local.exists():
        raise SettingsError(f"task file {path} does not exist ({local})")
    return str(local.relative_to(PROJECT_ROOT)) if local.is_relative_to(PROJECT_ROOT) else str(local)


def with_task(
    settings: Settings, reference: str | None = None, heldout: str | None = None, on_task: str | None = None
) -> Settings:
    """``settings`` with the task's reference set, held-out set and on-task rule replaced where given; raises
    SettingsError naming what is wrong."""
    document = settings.document()
    document["data"] |= {key: task_path(value) for key, value in
                         (("reference_set", reference), ("heldout_set", heldout)) if value is not None}
    if on_task is not None:
        document["experiment"]["on_task"] = on_task
    try:
        return Settings.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"the experiment's task options: {problems}") from None


def materialize_upstream(
    profile: str, targets: list[str], tags: dict[str, str], what: str
) -> tuple[str, dict[str, dict[str, object]]]:
    """Materialize ``targets`` and everything upstream of them with ``profile``; the run id and its
    :func:`run_summary`. Raises RuntimeError naming the run (``what`` says whose it is) when it fails."""
    selection = AssetSelection.assets(*targets).upstream().resolve(build_definitions(profile).resolve_asset_graph())
    instance = DagsterInstance.get()
    result = execute_pipeline(profile, list(selection), instance, tags)
    if not result.success:
        raise RuntimeError(f"the pipeline run {result.run_id} {what} failed")
    return result.run_id, run_summary(instance, result)


@dataclass(frozen=True)
class ArmDataset:
    """One arm's final dataset in one replicate, and facts about what produced it."""

    rows: pl.DataFrame
    facts: dict[str, object]


class EffectExperiment:
    """The effect experiment of one profile; results and work under ``out``."""

    def __init__(self, profile: str | Settings, out: Path, log: Callable[[str], None] = print) -> None:
        self.settings = load_settings(profile) if isinstance(profile, str) else profile
        self.document = self.settings.document()
        data = self.settings.data
        self.files = {role: content_digest(resolve_path(path)) for role, path in (
            ("seed_prompts", data.seed_prompts), ("reference_set", data.reference_set),
            ("heldout_set", data.heldout_set), ("general_heldout", GENERAL_HELDOUT))}
        self.key = design_key(self.document, self.files)
        self.out, self.log = Path(resolve_path(str(out))), log
        self.work = self.out / "work" / self.key
        resources = build_resources(self.settings)
        self.runtime, self.launcher = resources["runtime"], resources["launcher"]
        self.teacher, self.student = resources["teacher"], resources["student"]
        task = data.source("heldout_set")
        self.heldout = {
            "task_loss": load_examples(task.location, ["id", "instruction", "response"], task.max_instruction_chars,
                                       task.columns),
            "general_loss": load_examples(resolve_path(GENERAL_HELDOUT), ["id", "instruction", "response"],
                                          data.max_instruction_chars),
        }
        self.on_task = on_task_rule(self.settings.experiment.on_task)
        self._shifts: dict[int, TeacherLogprobShift | None] = {}  # the current replicate's

    def seed(self, replicate: int) -> int:
        """The runtime seed of replicate ``replicate``."""
        return self.settings.runtime.seed + replicate

    def _folder(self, replicate: int, arm: str) -> Path:
        return self.work / f"r{replicate}" / arm

    def arm_profile(self, replicate: int, arm: str) -> Path:
        """Write the profile of one arm's pipeline run: the experiment's profile with the replicate's seed, the
        arm's signal, its own tables folder, the replicate's checkpoints and the shared cache."""
        folder = self._folder(replicate, arm)
        document = copy.deepcopy(self.document)
        document["name"] = f"{self.settings.name}-r{replicate}-{arm}"
        document["runtime"]["seed"] = self.seed(replicate)
        if arm in SIGNALS:
            document["pairs"]["signal"] = SIGNALS[arm]
        document["storage"].update(tables=str(folder / "tables"), cache=str(self.out / "work" / "cache"),
                                   checkpoints=str(self.work / f"r{replicate}" / "checkpoints"))
        path = folder / "profile.yaml"
        publish_bytes(path, yaml.safe_dump(document, sort_keys=False).encode())
        return path

    def dataset(self, replicate: int, arm: str) -> ArmDataset:
        """The arm's final dataset of ``replicate``: stored earlier, or made now by a pipeline run."""
        folder = self._folder(replicate, arm)
        facts_file = folder / "facts.json"
        if facts_file.exists():  # written last: the dataset beside it is whole
            return ArmDataset(pl.read_parquet(folder / "dataset.parquet"), json.loads(facts_file.read_text()))
        profile = str(self.arm_profile(replicate, arm))
        target = "baseline_dataset" if arm == SELF_INSTRUCT else "student_dataset"
        self.log(f"replicate {replicate}, {arm}: pipeline run up to {target} ({profile})")
        started = time.monotonic()
        # the baseline too: student_dataset's diversity check compares with it (its text comes from the cache)
        run_id, summary = materialize_upstream(profile, [target, "baseline_dataset"],
                                               {"montessori/experiment": self.key, "montessori/arm": arm},
                                               f"of {arm}, replicate {replicate}")
        rows = TableStore.read(summary[target]["path"])
        facts: dict[str, object] = {"run_id": run_id, "pipeline_seconds": round(time.monotonic() - started, 1)}
        if arm in SIGNALS:
            teacher = TableStore.read(summary["teacher_checkpoint"]["path"]).row(0, named=True)
            warm = TableStore.read(summary["warm_student"]["path"])
            facts |= {name: teacher[name] for name in ("signal", "target", "pairs", "teacher_version")}
            facts["warm_student"] = warm["student_version"][0]
            facts |= self.diagnose(arm, replicate, profile, summary, teacher)
        if arm in SIGNALS and SIGNALS[arm] == "influence":  # the round's tables, for links 1 and 2
            tables = {name: str(summary[name]["path"]) for name in ROUND_TABLES}
            publish_bytes(folder / ROUND_FILE, json.dumps(tables, indent=2).encode())
        publish_bytes(folder / "dataset.parquet", parquet_bytes(rows))
        publish_bytes(folder / "facts.json", json.dumps(facts, indent=2).encode())
        self.log(f"replicate {replicate}, {arm}: {rows.height} rows in {facts['pipeline_seconds']:.0f} s"
                 + (f" ({facts['pairs']} {facts['signal']} pairs)" if arm in SIGNALS else ""))
        return ArmDataset(rows, facts)

    def diagnose(
        self, arm: str, replicate: int, profile: str, summary: dict[str, dict], teacher: dict[str, object]
    ) -> dict[str, float]:
        """Why the arm's teacher may (not) teach better, measured while the replicate's checkpoints exist
        (:mod:`resources.diagnostics`): how far DPO moved the teacher, and for the influence arm how consistent
        the signal is and what it tracks. ``teacher``: the run's teacher manifest row."""
        stores = build_resources(load_settings(profile))["stores"]
        facts = dpo_summary(teacher["dpo_history"])
        shift = self._logprob_shift(replicate, summary)
        if shift is not None:
            facts["teacher_logprob_shift"] = shift(stores.checkpoint_store().local_folder(teacher["uri"]))
        if SIGNALS[arm] != "influence":
            return facts
        scores = TableStore.read(summary["influence_scores"]["path"])
        facts |= score_correlations(scores, load_tokenizer(self.student.folder()).encode)
        candidates = scores.select("candidate_id", "prompt_id", "prompt", "instruction", "response", "raw_output")
        warm = TableStore.read(summary["warm_student"]["path"])

        def score_halves(first: pl.DataFrame, second: pl.DataFrame) -> list[list[float]]:
            return influence_against(self.settings.influence, self.runtime, stores, candidates, warm, [first, second],
                                     self.log)

        reference = TableStore.read(summary["reference_set"]["path"])
        return facts | split_half_reliability(score_halves, reference, self.seed(replicate))

    def _logprob_shift(self, replicate: int, summary: dict[str, dict]) -> TeacherLogprobShift | None:
        """The teacher log-prob shift measure of ``replicate`` (the untuned teacher's instructions on the final
        prompts, the same for every arm: its loss is computed once per replicate); None for the official style."""
        if replicate not in self._shifts:
            messages = self._final_messages(TableStore.read(summary["seed_prompts"]["path"]), replicate)
            untuned = TableStore.read(summary["baseline_dataset"]["path"])
            self._shifts = {replicate: None if messages is None else TeacherLogprobShift(
                self.teacher.folder(), [messages[prompt_id] for prompt_id in untuned["prompt_id"]],
                untuned["instruction"].to_list(), self.runtime.torch_device, self.runtime.dtype,
                self.settings.influence.max_length,
            )}
        return self._shifts[replicate]

    def _final_messages(self, seeds: pl.DataFrame, replicate: int) -> dict[str, str] | None:
        """The final (held) synthesis prompts' user messages by prompt id; None for the official style, whose
        prompts show instructions generated earlier in the run."""
        synthesis, final = self.settings.synthesis, self.settings.student_dataset
        if synthesis.style != "compact":
            return None
        prompts = few_shot_prompts(synthesis.style, seeds, final.num_prompts, self.seed(replicate) + final.seed_offset,
                                   synthesis.shots, synthesis.generated_shots)
        return {prompt.prompt_id: prompt.message for prompt in prompts.build(0, len(prompts), [])}

    def replicate_datasets(self, replicate: int) -> dict[str, ArmDataset]:
        """Every arm's dataset of ``replicate``, scored for the teacher shift (link 2) while the warm student
        exists; then the replicate's checkpoints (warm student, tuned teachers) are deleted: nothing reads them
        any more."""
        datasets = {arm: self.dataset(replicate, arm) for arm in EFFECT_ARMS}
        checkpoints = self.work / f"r{replicate}" / "checkpoints"
        if not (self.work / f"r{replicate}" / SHIFT_FILE).exists():
            if not checkpoints.exists():
                raise RuntimeError(f"replicate {replicate}: its warm student is gone but its datasets were never "
                                   f"scored for the teacher shift (a work folder of an older version); delete "
                                   f"{self.work / f'r{replicate}'} to remake the replicate's data")
            self._score_shift(replicate, datasets)
        if checkpoints.exists():
            shutil.rmtree(checkpoints)
            self.log(f"replicate {replicate}: every dataset made; removed its checkpoints ({checkpoints})")
        return datasets

    def _round_tables(self, replicate: int) -> dict[str, pl.DataFrame]:
        """The influence arm's round tables of ``replicate`` (:data:`ROUND_TABLES`)."""
        paths = json.loads((self._folder(replicate, MONTESSORI) / ROUND_FILE).read_text())
        return {name: TableStore.read(path) for name, path in paths.items()}

    def _score_shift(self, replicate: int, datasets: dict[str, ArmDataset]) -> None:
        """Score every arm's final rows with the replicate's warm student against the task reference set (the
        settings' influence method, the pairs' baseline; the influence cache serves rows scored before) and store
        one row per (arm, row)."""
        tables = self._round_tables(replicate)
        profile = str(self._folder(replicate, MONTESSORI) / "profile.yaml")
        stores = build_resources(load_settings(profile))["stores"]
        rows = pl.concat([d.rows.select(SHIFT_COLUMNS) for d in datasets.values()]).unique("candidate_id",
                                                                                            maintain_order=True)
        self.log(f"replicate {replicate}: teacher shift, scoring {rows.height} final rows of {len(datasets)} arms")
        scored = score_candidates(self.settings.influence, self.runtime, stores, rows, tables["warm_student"],
                                  tables["reference_set"], self.log)
        scores = score_column(scored, self.settings.pairs.baseline).select("candidate_id", "influence", "score")
        table = pl.concat([d.rows.select("candidate_id", arm=pl.lit(arm)) for arm, d in datasets.items()])
        publish_bytes(self.work / f"r{replicate}" / SHIFT_FILE,
                      parquet_bytes(table.join(scores, on="candidate_id", how="left", maintain_order="left")))

    def _fine_tune_and_measure(self, train: pl.DataFrame, replicate: int) -> dict[str, float]:
        """The student fine-tuned on ``train`` (the evaluation settings, seed = the replicate's): its loss on the
        task and the general held-out sets."""
        params = self.settings.evaluation.sft_params()
        self.runtime.prepare_torch()
        model, tokenizer = fine_tune(self.student.folder(), train, params, self.seed(replicate),
                                     self.runtime.torch_device, self.runtime.dtype, self.launcher.launch(), self.log)
        return {metric: heldout_loss(model, tokenizer, frame, params.max_length)
                for metric, frame in self.heldout.items()}

    def measure(self, job: Job) -> dict[str, object]:
        """The job's results: an effect arm, a selection arm (link 1) or an arm's teacher shift (link 2)."""
        return {"": self.measure_effect, LINK1: self.measure_selection, LINK2: self.measure_shift}[job.study](job)

    def measure_effect(self, job: Job) -> dict[str, object]:
        """Fine-tune the student on the arm's dataset (cut to the replicate's common size) and measure it."""
        datasets = self.replicate_datasets(job.replicate)
        own, untuned = datasets[job.arm].rows, datasets[SELF_INSTRUCT].rows
        train = equal_size({arm: dataset.rows for arm, dataset in datasets.items()})[job.arm]
        losses = self._fine_tune_and_measure(train, job.replicate)
        identical = own["instruction"].is_in(untuned["instruction"].implode()).mean()
        return {**losses, "on_task_share": on_task_share(own["instruction"], self.on_task),
                "identical_to_untuned": identical, "dataset_rows": own.height, "train_rows": train.height,
                **datasets[job.arm].facts}

    def pool(self, replicate: int) -> pl.DataFrame:
        """The replicate's round candidates (kept rows less the warm-up prompts) with their influence, its
        ``score`` under the pairs' baseline and the warm student's loss: what the DPO arms' pairs came from."""
        self.replicate_datasets(replicate)
        scores = self._round_tables(replicate)["influence_scores"]
        return score_column(scores, self.settings.pairs.baseline).select(
            "candidate_id", "prompt_id", "instruction", "response", "influence", "score", "candidate_loss")

    def measure_selection(self, job: Job) -> dict[str, object]:
        """Link 1: fine-tune the student on the arm's selection from the replicate's pool and measure it."""
        pool = self.pool(job.replicate)
        rule = SELECTION_ARMS[job.arm]
        train = select_rows(pool, self.settings.student_dataset.selection(self.seed(job.replicate), rule))
        self.log(f"replicate {job.replicate}, {job.arm}: {train.height} of {pool.height} candidates ({rule})")
        return {**self._fine_tune_and_measure(train.select("instruction", "response"), job.replicate),
                "rule": rule, "pool_rows": pool.height, "train_rows": train.height,
                "selected_mean_influence": train["score"].mean(),
                "on_task_share": on_task_share(train["instruction"], self.on_task)}

    def measure_shift(self, job: Job) -> dict[str, object]:
        """Link 2: the influence of the arm's final rows from the replicate's warm student, and whether its data is
        the one its H1-H4 record measured."""
        dataset = self.replicate_datasets(job.replicate)[job.arm]
        table = pl.read_parquet(self.work / f"r{job.replicate}" / SHIFT_FILE).filter(pl.col("arm") == job.arm)
        return {**shift_metrics(table["score"].to_list()), "baseline": self.settings.pairs.baseline,
                **self.compare_with_effect_record(Job(job.arm, job.replicate), dataset)}

    def compare_with_effect_record(self, effect_job: Job, dataset: ArmDataset) -> dict[str, bool | None]:
        """Whether ``dataset`` is the one the stored effect record of ``effect_job`` measured, two ways:
        ``same_data_as_effect_record`` (pre-registered: the teacher and warm-student versions and the row count)
        and ``same_facts_as_effect_record`` (what the data determine, :data:`DATA_FACTS`: row count, on-task share
        and, for a tuned teacher, pair count, last DPO epoch's margin and teacher log-prob shift). The versions also
        hash the settings, so a setting added since the record, at its neutral value, changes them while the data
        stay the same; the facts tell the two apart. Both None without a record under this design."""
        path = self.out / "jobs" / effect_job.file_name
        record = json.loads(path.read_text()) if path.exists() else None
        if record is None or record.get("key") != self.key:
            return {"same_data_as_effect_record": None, "same_facts_as_effect_record": None}
        now = {**dataset.facts, "dataset_rows": dataset.rows.height,
               "on_task_share": on_task_share(dataset.rows["instruction"], self.on_task)}
        return {
            "same_data_as_effect_record": all(record[name] == now[name] for name in (
                "teacher_version", "warm_student", "dataset_rows") if name in record and name in now),
            "same_facts_as_effect_record": all(
                math.isclose(record[name], now[name], rel_tol=1e-9, abs_tol=1e-12)
                for name in DATA_FACTS if record.get(name) is not None and now.get(name) is not None),
        }

    def design(self, replicates: int) -> dict[str, object]:
        """The design as run, in words, for the report."""
        s = self.settings
        heldout = {metric: f"{frame.height} pairs" for metric, frame in self.heldout.items()}
        return {
            "profile": f"{s.name} (design key {self.key})",
            "replicates": f"{replicates}; replicate r runs with runtime.seed {s.runtime.seed} + r",
            "teacher / student": f"{s.models.teacher} / {s.models.student}",
            "reference set": s.data.reference_set,
            "round candidates": f"{s.synthesis.num_prompts} prompts x {s.synthesis.samples_per_prompt} samples, "
                                f"warm-up on {s.warmup.fraction:.0%} of the prompts",
            "influence": f"{s.influence.method}",
            "pairs": f"rule {s.pairs.rule}, baseline {s.pairs.baseline}, target {s.pairs.target}; signal per arm: "
                     + ", ".join(f"{arm} {signal}" for arm, signal in SIGNALS.items()),
            "teacher DPO": f"beta {s.dpo.beta}, learning rate {s.dpo.learning_rate:g}, {s.dpo.epochs:g} epoch(s)",
            "final datasets": f"{s.student_dataset.num_prompts} prompts x {s.synthesis.samples_per_prompt} samples "
                              "(kept rows), cut to the smallest arm's size within each replicate",
            "student SFT": f"learning rate {s.evaluation.learning_rate:g}, {s.evaluation.epochs:g} epoch(s), batch "
                           f"{s.evaluation.batch_size}, seed = the replicate's seed",
            "task held-out": f"{s.data.heldout_set} ({heldout['task_loss']})",
            "general held-out": f"{GENERAL_HELDOUT} ({heldout['general_loss']})",
            "on-task rule": s.experiment.on_task,
            "link 1, selection arms": f"{s.student_dataset.select_share:.0%} of each replicate's candidate pool by "
                                      + ", ".join(f"{arm} {rule}" for arm, rule in SELECTION_ARMS.items()),
            "link 2, teacher shift": f"every arm's final rows scored by the replicate's warm student against the "
                                     f"reference set ({s.influence.method}, baseline {s.pairs.baseline})",
        }

    def preregistrations(self, replicates: int) -> dict[str, Preregistration]:
        """The criteria in force for each study (by section name), written into RESULTS.md now where they are not
        there yet: before any of their results."""
        s, results_md = self.settings, self.out / "RESULTS.md"
        heldout, on_task = s.data.heldout_set, s.experiment.on_task
        budget = EFFECT_BUDGET if s.name == "effect" and not changed_files(self.files) else ""
        wanted = {
            "": (effect_preregistration(replicates, heldout, GENERAL_HELDOUT, on_task), EFFECT_ARMS),
            LINK1: (link1_preregistration(replicates, s.student_dataset.select_share, heldout, GENERAL_HELDOUT, budget),
                    tuple(SELECTION_ARMS)),
            LINK2: (link2_preregistration(replicates, s.pairs.baseline, budget), EFFECT_ARMS),
        }
        in_force = {}
        for name, (prereg, arms) in wanted.items():
            in_force[name] = ensure_preregistered(results_md, prereg, TITLE, name, HEADINGS.get(name, ""))
            if set(in_force[name].arms) != set(arms):
                raise ValueError(f"RESULTS.md pre-registers arms {in_force[name].arms}"
                                 f"{f' for {name}' if name else ''}; this experiment runs {list(arms)}")
            if in_force[name].replicates != replicates:
                self.log(f"note: RESULTS.md pre-registers {in_force[name].replicates} replicates"
                         f"{f' for {name}' if name else ''}; running {replicates}")
        return in_force

    def run(self, replicates: int) -> dict:
        """Run (or resume) every arm of every study for ``replicates`` replicates and write the report; return the
        first study's analysis, the links' under ``studies``."""
        preregs = self.preregistrations(replicates)
        jobs = plan_studies({name: prereg.arms for name, prereg in preregs.items()}, replicates)
        records = run_jobs(jobs, self.measure, self.out / "jobs", self.key, self.log)
        by_study: dict[str, list[dict]] = {name: [] for name in preregs}
        for job, record in zip(jobs, records, strict=True):
            by_study[job.study].append(record)
        details = {"": DETAILS, LINK1: LINK1_DETAILS, LINK2: LINK2_DETAILS}
        studies = [Study(prereg, by_study[name], name, HEADINGS.get(name, ""), details[name],
                         f"{name}.png" if name else "effect.png") for name, prereg in preregs.items()]
        first, *links = write_studies(self.out, TITLE, self.design(replicates), studies)
        return {**first, "studies": dict(zip((LINK1, LINK2), links, strict=True))}


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    """``frame`` as Parquet file bytes (to publish atomically)."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def run_experiment(
    profile: str, replicates: int, out: Path, log: Callable[[str], None] = print, reference: str | None = None,
    heldout: str | None = None, on_task: str | None = None,
) -> dict:
    """Run or resume the effect experiment of ``profile`` into ``out`` on the profile's task, or with the given
    task reference set, held-out set and on-task rule; return the report's analysis."""
    ensure_dagster_home()
    settings = with_task(load_settings(profile), reference, heldout, on_task)
    return EffectExperiment(settings, out, log).run(replicates)


def experiment_command(args: argparse.Namespace) -> int:
    """The ``montessori experiment`` command."""
    out = Path(resolve_path(args.out))
    analysis = run_experiment(args.profile, args.replicates, out, reference=args.task_reference,
                              heldout=args.task_heldout, on_task=args.on_task)
    for study in (analysis, *analysis["studies"].values()):
        for hypothesis in study["hypotheses"]:
            print(f"{hypothesis['name']}: {hypothesis['verdict']} ({hypothesis['claim']})")
    print(f"report: {out / 'RESULTS.md'}")
    return 0


def add_experiment_command(commands: argparse._SubParsersAction) -> None:
    """Add ``experiment`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "experiment", help="controlled experiment: does the tuned teacher teach better, and where does the chain "
        "break? (4 arms, 4 selection arms and the teacher shift, x N replicates)"
    )
    parser.add_argument("--profile", default="effect", help="bundled profile name or settings file path")
    parser.add_argument("--replicates", type=int, default=5, help="paired replicates per arm")
    parser.add_argument("--out", default="experiments/effect",
                        help="folder of RESULTS.md, results.json, effect.png, jobs/ and work/ (relative paths: from "
                        "the project root)")
    parser.add_argument("--task-reference", default=None, metavar="FILE",
                        help="the task's reference set (instruction/response pairs influence is measured against; "
                        "default: the profile's data.reference_set)")
    parser.add_argument("--task-heldout", default=None, metavar="FILE",
                        help="the task's held-out set (task_loss; default: the profile's data.heldout_set)")
    parser.add_argument("--on-task", default=None, metavar="RULE",
                        help="which instructions are on the task: arithmetic, 'keywords: a, b' or 'regex: PATTERN' "
                        "(default: the profile's experiment.on_task)")
    parser.set_defaults(handler=experiment_command)
