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

Every finished (arm, replicate) is stored under ``{out}/jobs`` and every arm's dataset under ``{out}/work``,
so a killed experiment resumes where it stopped. The report (RESULTS.md, results.json, effect.png) is
written from every finished job at the end.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml
from dagster import AssetSelection, DagsterInstance

from assets.config import DataSettings, resolve_path
from assets.influence import influence_against
from dagster_project.definitions import build_definitions
from dagster_project.resources import build_resources
from dagster_project.runs import ensure_dagster_home, execute_pipeline, run_summary
from dagster_project.settings import load_settings
from resources.evaluation.student_sft import equal_size, fine_tune, heldout_loss
from resources.experiment.diagnostics import (
    TeacherLogprobShift,
    dpo_summary,
    score_correlations,
    split_half_reliability,
)
from resources.experiment.effect_design import SELF_INSTRUCT, SIGNALS, effect_preregistration
from resources.experiment.on_task import on_task_share
from resources.experiment.preregistration import ensure_preregistered
from resources.experiment.results import write_report
from resources.experiment.runner import Job, plan_jobs, run_jobs
from resources.models import load_tokenizer
from resources.storage.tables import TableStore, publish_bytes
from resources.storage.user_data import load_examples
from resources.synthesis.synthesize import few_shot_prompts

TITLE = "Does the tuned teacher teach better? A controlled experiment"
GENERAL_HELDOUT = DataSettings().heldout_set
DESIGN_VERSION = "2"  # bump when the procedure below changes: results stored under another design are redone
DIAGNOSTICS = ("teacher_logprob_shift", "dpo_last_epoch_margin", "dpo_last_epoch_accuracy", "split_half_reliability",
               "influence_vs_response_tokens", "influence_vs_own_loss")
# settings that change memory and speed, not results: left out of the design key, so turning them on or off
# does not redo stored results (tests/engines/training/test_training.py checks the weights are the same)
SPEED_ONLY = {"dpo": {"activation_checkpointing"}, "evaluation": {"activation_checkpointing"}}
DETAILS = ("signal", "pairs", "identical_to_untuned", "dataset_rows", "train_rows", *DIAGNOSTICS)


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

    def __init__(self, profile: str, out: Path, log: Callable[[str], None] = print) -> None:
        self.settings = load_settings(profile)
        self.document = self.settings.document()
        design = {block: {name: setting for name, setting in value.items() if name not in SPEED_ONLY.get(block, ())}
                  if isinstance(value, dict) else value
                  for block, value in self.document.items() if block != "storage"}  # storage: set per run
        self.key = hashlib.sha256(json.dumps([DESIGN_VERSION, design], sort_keys=True).encode()).hexdigest()[:12]
        self.out, self.log = Path(resolve_path(str(out))), log
        self.work = self.out / "work" / self.key
        resources = build_resources(self.settings)
        self.runtime, self.launcher = resources["runtime"], resources["launcher"]
        self.teacher, self.student = resources["teacher"], resources["student"]
        data = self.settings.data
        self.heldout = {metric: load_examples(resolve_path(path), ["id", "instruction", "response"],
                                              data.max_instruction_chars)
                        for metric, path in (("task_loss", data.heldout_set), ("general_loss", GENERAL_HELDOUT))}
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
        buffer = io.BytesIO()
        rows.write_parquet(buffer)
        publish_bytes(folder / "dataset.parquet", buffer.getvalue())
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
        """Every arm's dataset of ``replicate``; once all exist the replicate's checkpoints (warm student,
        tuned teachers) are deleted: nothing reads them any more."""
        datasets = {arm: self.dataset(replicate, arm) for arm in (SELF_INSTRUCT, *SIGNALS)}
        checkpoints = self.work / f"r{replicate}" / "checkpoints"
        if checkpoints.exists():
            shutil.rmtree(checkpoints)
            self.log(f"replicate {replicate}: every dataset made; removed its checkpoints ({checkpoints})")
        return datasets

    def measure(self, job: Job) -> dict[str, object]:
        """Fine-tune the student on the arm's dataset (cut to the replicate's common size) and measure it."""
        datasets = self.replicate_datasets(job.replicate)
        own, untuned = datasets[job.arm].rows, datasets[SELF_INSTRUCT].rows
        train = equal_size({arm: dataset.rows for arm, dataset in datasets.items()})[job.arm]
        params = self.settings.evaluation.sft_params()
        self.runtime.prepare_torch()
        model, tokenizer = fine_tune(self.student.folder(), train, params, self.seed(job.replicate),
                                     self.runtime.torch_device, self.runtime.dtype, self.launcher.launch(), self.log)
        losses = {metric: heldout_loss(model, tokenizer, frame, params.max_length)
                  for metric, frame in self.heldout.items()}
        identical = own["instruction"].is_in(untuned["instruction"].implode()).mean()
        return {**losses, "on_task_share": on_task_share(own["instruction"]), "identical_to_untuned": identical,
                "dataset_rows": own.height, "train_rows": train.height, **datasets[job.arm].facts}

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
        }

    def run(self, replicates: int) -> dict:
        """Run (or resume) every arm of ``replicates`` replicates and write the report; return its analysis."""
        prereg = ensure_preregistered(self.out / "RESULTS.md", effect_preregistration(replicates), TITLE)
        if set(prereg.arms) != {SELF_INSTRUCT, *SIGNALS}:
            raise ValueError(f"RESULTS.md pre-registers arms {prereg.arms}; this experiment runs "
                             f"{[SELF_INSTRUCT, *SIGNALS]}")
        if prereg.replicates != replicates:
            self.log(f"note: RESULTS.md pre-registers {prereg.replicates} replicates; running {replicates}")
        records = run_jobs(plan_jobs(prereg.arms, replicates), self.measure, self.out / "jobs", self.key, self.log)
        return write_report(self.out, records, prereg, self.design(replicates), TITLE, DETAILS)


def run_experiment(profile: str, replicates: int, out: Path, log: Callable[[str], None] = print) -> dict:
    """Run or resume the effect experiment of ``profile`` into ``out``; return the report's analysis."""
    ensure_dagster_home()
    return EffectExperiment(profile, out, log).run(replicates)


def experiment_command(args: argparse.Namespace) -> int:
    """The ``montessori experiment`` command."""
    out = Path(resolve_path(args.out))
    analysis = run_experiment(args.profile, args.replicates, out)
    for hypothesis in analysis["hypotheses"]:
        print(f"{hypothesis['name']}: {hypothesis['verdict']} ({hypothesis['claim']})")
    print(f"report: {out / 'RESULTS.md'}")
    return 0


def add_experiment_command(commands: argparse._SubParsersAction) -> None:
    """Add ``experiment`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "experiment", help="controlled experiment: does the tuned teacher teach better? (4 arms x N replicates)"
    )
    parser.add_argument("--profile", default="effect", help="bundled profile name or settings file path")
    parser.add_argument("--replicates", type=int, default=5, help="paired replicates per arm")
    parser.add_argument("--out", default="experiments/effect",
                        help="folder of RESULTS.md, results.json, effect.png, jobs/ and work/ (relative paths: from "
                        "the project root)")
    parser.set_defaults(handler=experiment_command)
