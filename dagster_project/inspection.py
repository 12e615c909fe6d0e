"""The CLI's look-before and look-after commands: ``plan`` (preview and projection of a run), ``view`` (a browsable
page of a table version) and ``cost`` (a run's cost ledger). Wiring only: the engines are
:mod:`resources.cost.plan`, :mod:`resources.cost.ledger` and :mod:`resources.storage.viewer`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from dagster import DagsterInstance
from upath import UPath

from dagster_project.definitions import build_definitions
from dagster_project.lineage import versions
from dagster_project.resources import build_resources
from dagster_project.runs import ensure_dagster_home, run_costs
from dagster_project.settings import load_settings
from resources.cost.ledger import StageCost, cost_table, overhead
from resources.cost.plan import PlanParams, Projection, measure, project
from resources.models import load_causal_lm
from resources.storage.tables import TableStore
from resources.storage.user_data import load_examples
from resources.storage.viewer import page_kind, render_page, serve_folder, write_page

PREVIEW_WIDTH = 100


def _short(text: object, width: int = PREVIEW_WIDTH) -> str:
    value = " ".join(str(text or "").split())
    return value if len(value) <= width else value[: width - 1] + "…"


def _weights_mb(folder: str) -> float:
    return sum(p.stat().st_size for pattern in ("*.safetensors", "*.bin") for p in Path(folder).glob(pattern)) / 2**20


def plan_command(args: argparse.Namespace) -> int:
    """Validate a profile, preview a batch of synthesis with its verdicts, measure this machine and project the run."""
    settings = load_settings(args.profile)
    resources = build_resources(settings)
    runtime, generation = resources["runtime"], resources["generation"]
    synthesis, warmup, influence = settings.synthesis, settings.warmup, settings.influence
    print(f"profile {settings.name}: valid ({settings.rounds} round(s), {synthesis.style} prompts, "
          f"{synthesis.filters} filters, influence {influence.method}, device {runtime.torch_device})")
    teacher, student = resources["teacher"].folder(), resources["student"].folder()
    print(f"teacher {settings.models.teacher}: {teacher} ({_weights_mb(teacher):.1f} MB of weights)")
    print(f"student {settings.models.student}: {student} ({_weights_mb(student):.1f} MB of weights)")
    _, tokenizer = load_causal_lm(student, "cpu", runtime.dtype)
    data = {}
    for key, name in (("seed_source", "seed_prompts"), ("reference_source", "reference_set"),
                      ("heldout_source", "heldout_set")):
        source = resources[key]
        columns = ["id", "instruction"] if name == "seed_prompts" else ["id", "instruction", "response"]
        data[name] = load_examples(source.location, columns, source.max_instruction_chars, source.columns)
        texts = [" ".join(row) for row in data[name].select(columns[1:]).iter_rows()]
        tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        print(f"{name}: {source.location} ({data[name].height} rows, {tokens:,} tokens)")
    batch = synthesis.instruction.batch_size
    preview_prompts = args.samples or max(2, batch // synthesis.samples_per_prompt)
    params = PlanParams(
        rounds=settings.rounds, style=synthesis.style, shots=synthesis.shots, generated_shots=synthesis.generated_shots,
        num_prompts=synthesis.num_prompts, final_prompts=settings.student_dataset.num_prompts,
        synthesis=synthesis.params(runtime.seed), warmup=warmup.params(runtime.seed), warmup_fraction=warmup.fraction,
        warmup_max_length=warmup.max_length, warmup_truncation=warmup.truncation, influence=influence.params(),
        influence_shards=influence.shards, scores_final_dataset=settings.student_dataset.scores_influence,
        dpo_epochs=settings.dpo.epochs, pair_target=settings.pairs.target, eval_seeds=len(settings.evaluation.seeds),
        eval_epochs=settings.evaluation.epochs, eval_max_length=settings.evaluation.max_length,
        judge_tokens=settings.evaluation.judge_max_new_tokens if settings.evaluation.judge else 0,
        seed=runtime.seed, device=runtime.torch_device, dtype=runtime.dtype, prices=settings.prices.table(),
    )
    print(f"\npreview: {preview_prompts} prompt(s) x {synthesis.samples_per_prompt} samples with the current "
          "synthesis settings (nothing is written to the tables)")
    generator = generation.generator(teacher, runtime, batch)
    table, rates = measure(generator, student, data["seed_prompts"], data["reference_set"], data["heldout_set"],
                           params, preview_prompts, lambda line: print(f"  {line}") if args.verbose else None)
    print(f"{'prompt':<28}{'#':>2}  {'verdict':<20}instruction")
    for row in table.iter_rows(named=True):
        print(f"{row['prompt_id']:<28}{row['sample_index']:>2}  {row['verdict']:<20}{_short(row['instruction'])}")
    counts = ", ".join(f"{v}={n}" for v, n in table["verdict"].value_counts().sort("verdict").iter_rows())
    print(f"verdicts: {counts} ({rates.kept_share:.0%} kept)")
    graph = build_definitions(args.profile).resolve_asset_graph()
    stages = [key.to_user_string() for key in graph.toposorted_asset_keys if graph.get(key).is_materializable]
    projection = project(params, rates, stages)
    _print_projection(projection, settings.prices.table().currency)
    if args.json:
        print(json.dumps({"samples": table.select("prompt_id", "sample_index", "verdict", "instruction").to_dicts(),
                          "stages": {s.stage: {**s.usage.as_dict(), "money": s.money} for s in projection.stages},
                          "total_seconds": projection.total_seconds, "assumptions": projection.assumptions}))
    return 0


def _print_projection(projection: Projection, currency: str) -> None:
    money = any(stage.money is not None for stage in projection.stages)
    print(f"\nprojected run on this machine\n{'stage':<30}{'wall s':>8}{'tokens in':>10}{'tokens out':>11}"
          f"{'trained':>9}{'examples':>9}" + (f"{'money':>10}" if money else "") + "  how")
    for stage in projection.stages:
        u = stage.usage
        cost = (f"{stage.money:>10.4f}" if stage.money is not None else f"{'-':>10}") if money else ""
        print(f"{stage.stage:<30}{u.wall_seconds:>8.0f}{u.tokens_in:>10,}{u.tokens_out:>11,}{u.tokens_trained:>9,}"
              f"{u.examples:>9,}{cost}  {stage.how}")
    total = sum(s.money for s in projection.stages if s.money is not None)
    print(f"{'total':<30}{projection.total_seconds:>8.0f} s ({projection.total_seconds / 60:.1f} min)"
          + (f", {total:.4f} {currency}" if money else ""))
    ratio = overhead(StageCost(s.stage, s.stage, s.usage, s.money, currency) for s in projection.stages)
    if ratio is not None:
        print(ratio.sentence(projected=True))
    print("assumptions:\n" + "\n".join(f"- {line}" for line in projection.assumptions))


def view_command(args: argparse.Namespace) -> int:
    """Write one HTML page for a table version and serve it on 127.0.0.1 (or only write it with --to)."""
    ensure_dagster_home()
    rows = versions(DagsterInstance.get(), args.asset)
    if args.version:
        rows = [row for row in rows if row["data_version"] == args.version]
    if not rows:
        wanted = f" with data version {args.version}" if args.version else ""
        print(f"error: no materialization of {args.asset}{wanted} in this Dagster instance "
              f"(see `montessori versions {args.asset}`)", file=sys.stderr)
        return 1
    chosen = rows[0]
    if not chosen["exists"]:
        print(f"error: the table {chosen['path']} is gone (pruned or deleted)", file=sys.stderr)
        return 1
    table = TableStore.read(UPath(chosen["path"]))
    when = datetime.fromtimestamp(chosen["timestamp"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    details = {"asset": args.asset, "data version": chosen["data_version"], "rows": table.height,
               "written": when, "source_run": chosen["run_id"], "path": chosen["path"]}
    page = render_page(table, f"{args.asset} ({page_kind(table)})", details)
    if args.to:
        print(f"wrote {write_page(page, args.to)} ({table.height} rows of {args.asset} {chosen['data_version']})")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="montessori-view-"))
    write_page(page, folder / "index.html")
    server, thread = serve_folder(folder, args.port)
    print(f"serving {args.asset} {chosen['data_version']} at http://127.0.0.1:{server.server_address[1]}/ "
          "(Ctrl-C to stop)", flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def cost_command(args: argparse.Namespace) -> int:
    """Print a run's cost ledger per stage (default: the latest run) and Montessori's overhead in it."""
    defs = build_definitions(args.profile)
    ensure_dagster_home()
    runs = [r for r in DagsterInstance.get().get_runs(limit=500) if r.run_id.startswith(args.run or "")]
    if not runs:
        print(f"error: no run{' ' + args.run if args.run else ''} in this Dagster instance", file=sys.stderr)
        return 1
    costs = run_costs(defs.resources["stores"], runs[0].run_id)
    if args.json:
        print(json.dumps({"run_id": runs[0].run_id, "stages": [
            {"stage": c.asset or c.stage, **c.usage.as_dict(), "money": c.money, "currency": c.currency}
            for c in costs]}))
        return 0
    print(f"run {runs[0].run_id}\n{cost_table(costs) if costs else 'no cost recorded for this run'}")
    montessori_overhead = overhead(costs)
    if montessori_overhead:
        print(montessori_overhead.sentence())
    return 0


def add_inspection_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``plan``, ``view`` and ``cost`` to the CLI's subcommands."""
    plan = commands.add_parser("plan", help="validate a profile, preview samples and project a run's time and cost")
    plan.add_argument("--profile", default="demo", help="bundled profile name or settings file path")
    plan.add_argument("--samples", type=int, default=None,
                      help="preview prompts (default: one generation batch's worth)")
    plan.add_argument("--verbose", action="store_true", help="print the engines' log lines")
    plan.add_argument("--json", action="store_true", help="also print the preview and projection as JSON")
    plan.set_defaults(handler=plan_command)
    view = commands.add_parser("view", help="a browsable HTML page of a table version (served on 127.0.0.1)")
    view.add_argument("asset", help="e.g. preference_pairs, synthetic_instructions, round_2/influence_scores")
    view.add_argument("--version", default=None, help="data version (default: the latest materialization)")
    view.add_argument("--to", default=None, help="only write the page to this file")
    view.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    view.set_defaults(handler=view_command)
    cost = commands.add_parser("cost", help="a run's cost per stage, from its ledger")
    cost.add_argument("--profile", default="demo", help="the profile whose tables hold the ledger")
    cost.add_argument("--run", default=None, help="run id or its prefix (default: the latest run)")
    cost.add_argument("--json", action="store_true")
    cost.set_defaults(handler=cost_command)
