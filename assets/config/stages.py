"""Stage settings: each is one YAML block of the profile, validated straight into these classes (the resources the
stage assets declare), and each builds its engine's parameter object whole, by field name."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from assets.config.base import StrictConfig, StrictResource, by_name
from resources.generation.interface import SamplingParams
from resources.influence.projection import DEFAULT_DIM as PROJECTION_DIM
from resources.influence.scoring import InfluenceParams
from resources.preference.selection import SelectionParams
from resources.synthesis.decontamination import DecontaminationParams
from resources.synthesis.synthesize import SynthesisParams
from resources.training.trl_trainers import DPOParams, LoraParams, SFTParams
from resources.training.warmup import WarmupParams


class GenerationSettings(StrictConfig):
    """Sampling parameters for one generation call."""

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    presence_penalty: float = Field(1.0, ge=0.0, description="OpenAI-style: subtracted once per seen token")
    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(8, gt=0, description="prompts (or prompt x sample rows) per forward batch")

    def sampling(self, n: int, seed: int) -> SamplingParams:
        """The engine's sampling parameters for ``n`` samples per prompt."""
        return by_name(SamplingParams, self, n=n, seed=seed)


class SynthesisSettings(StrictResource):
    """Few-shot instruction synthesis by the teacher (paper: 4 samples, T=1, top_p 0.9, presence 1)."""

    num_prompts: int = Field(8, gt=0, description="few-shot synthesis prompts to build")
    style: Literal["official", "compact"] = Field(
        "compact",
        description="official: the authors' protocol (the teacher gives a reason, whether an input is needed, then "
        "the instruction in tags; 8 shots incl. 2 generated earlier; last closed tag pair, no pair = rejected). "
        "compact: a short prompt with the assistant turn prefilled by the opening tag, 3 seed shots, first pair or "
        "text to the end (deviation: a 135M teacher never closes the tag in the official style, 0 of 32 kept)",
    )
    shots: int | None = Field(None, gt=0, description="examples per prompt; null: the style's (official 8, compact 3)")
    generated_shots: int = Field(
        2, ge=0, description="official style: instructions generated earlier in the run shown once that many exist"
    )
    filters: Literal["official", "self_instruct"] = Field(
        "self_instruct",
        description="official: the authors' (<=5 or >400 characters, 13-word task list, first character ASCII, "
        "<input> tags removed); self_instruct: 5-400 words, whole text ASCII, the Self-Instruct 18-word list",
    )
    script: Literal["ascii", "any"] = Field(
        "ascii",
        description="ascii (both reference codes): the filters' ASCII rule (official: the first character must be "
        "ASCII; self_instruct: the whole text) and ROUGE-L on rouge_score's [a-z0-9] tokens; any: instructions in "
        "any script pass (e.g. Korean or German seeds) and ROUGE-L compares Unicode words (Han and kana: each "
        "character), so near-duplicates in other scripts are caught. Recorded in the filters column",
    )
    samples_per_prompt: int = Field(4, gt=0)
    instruction: GenerationSettings = GenerationSettings()
    response: GenerationSettings = GenerationSettings(
        temperature=0.6, top_p=0.9, presence_penalty=0.0, max_new_tokens=96
    )
    min_words: int = Field(5, ge=1)
    max_words: int = Field(400, ge=1)
    rouge_threshold: float = Field(0.7, gt=0.0, le=1.0, description="drop if ROUGE-L F1 > this vs kept")
    chunk_size: int = Field(
        16, gt=0, description="prompts generated between two saves; a killed run resumes from the last saved chunk. "
        "In the official style it also decides which earlier instructions a prompt can show",
    )

    def params(self, seed: int) -> SynthesisParams:
        """The synthesis engine's parameters with sampling seeded by ``seed``."""
        return by_name(
            SynthesisParams, self, instruction=self.instruction.sampling(self.samples_per_prompt, seed),
            response=self.response.sampling(1, seed),
        )


class WarmupSettings(StrictResource):
    """Warm-up SFT of the student before influence is measured."""

    fraction: float = Field(0.25, gt=0.0, lt=1.0, description="share of kept synthetic rows used for warm-up")
    learning_rate: float = Field(5e-6, gt=0.0)
    epochs: int = Field(1, gt=0)
    batch_size: int = Field(2, gt=0)
    max_length: int = Field(256, gt=8)
    weight_decay: float = Field(0.0, ge=0.0)
    gradient_accumulation: int = Field(
        1, ge=1, description="batches per optimizer step (effective batch = batch_size x this; paper: 16 x 2 = 32)"
    )
    schedule: Literal["constant", "ramp_then_hold"] = Field(
        "constant",
        description="ramp_then_hold (paper): lr rises linearly from 0 over the warm-up's optimizer steps, then is "
        "held, and influence continues at the held rate; constant: the rate from the first step",
    )
    loss: Literal["example_mean", "token_mean"] = Field(
        "example_mean",
        description="token_mean (paper, HF): token-weighted over the whole accumulated batch; example_mean: the mean "
        "of each example's mean token loss",
    )
    truncation: Literal["left", "right"] = Field(
        "left",
        description="right (paper): the chat-formatted pair as one text, tail cut at max_length, labels through the "
        "end; left: the prompt is cut from the left so the answer survives",
    )

    def params(self, seed: int) -> WarmupParams:
        """The warm-up engine's parameters."""
        return by_name(WarmupParams, self, seed=seed)


class InfluenceSettings(StrictResource):
    """Local data influence of each candidate on the reference loss."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset(
        {"shards", "chunk_size", "candidate_batch_size"}  # none changes a score
    )
    method: Literal["exact", "first_order", "projected"] = Field(
        "exact",
        description="exact: one real AdamW step per candidate; first_order: reference gradient dotted with "
        "the candidate's AdamW update; projected: first_order through each candidate's update randomly projected "
        "per parameter tensor and stored (storage.cache), so a new reference set re-scores stored candidates with "
        "one reference gradient and no candidate backward pass",
    )
    projection_dim: int = Field(
        PROJECTION_DIM, gt=0, description="projected only: each weight matrix W (d_out x d_in) is stored as S^T W R, "
        "R dense random signs (d_in x dim), S a count sketch of the rows into dim x ceil(d_out / d_in) buckets "
        "(1-D tensors exact); larger is closer to first_order and costs more compute and storage"
    )
    shards: int = Field(1, gt=0, description="split scoring into this many parallel steps (workers or pods)")
    chunk_size: int = Field(8, gt=0, description="candidates scored between two saves to the score cache")
    candidate_batch_size: int = Field(
        4, gt=0, description="first_order only: candidates per batched backward pass (their per-example gradients "
        "are held together, so this bounds memory; 1 is the sequential method); does not change a score"
    )
    param_pattern: str | None = Field(
        None, description="first_order only: regex of parameter names to include (default: all)"
    )
    reference_batch_size: int = Field(8, gt=0)
    max_length: int = Field(256, gt=8)
    reference_loss: Literal["example_mean", "batch_token_mean"] = Field(
        "example_mean",
        description="batch_token_mean (paper): mean over file-order batches of reference_batch_size of the "
        "token-weighted batch loss; example_mean: the mean of each reference pair's mean token loss",
    )
    truncation: Literal["left", "right"] = Field(
        "left", description="encoding of reference pairs and candidates: right (paper) or left (see warmup.truncation)"
    )

    def params(self) -> InfluenceParams:
        """The scoring engine's parameters (``shards`` is the wiring's: how many steps score in parallel)."""
        return by_name(InfluenceParams, self)

    def versioned_config(self) -> dict:
        """As every resource's, but ``projection_dim`` only when the projected method reads it (so the other
        methods' code versions and score caches do not change with it)."""
        config = super().versioned_config()
        if self.method != "projected":
            config.pop("projection_dim")
        return config


class PairSettings(StrictResource):
    """How influence scores become preference pairs, and whether a person reviews them before DPO."""

    # review changes the graph instead (the teacher then reads reviewed_pairs), not what preference_pairs holds
    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"review"})
    baseline: Literal["before_step", "null_step"] = Field(
        "before_step",
        description="before_step: the paper's sign against L_ref before the step; "
        "null_step: against L_ref after a momentum-only step (candidate gradient zeroed)",
    )
    rule: Literal["sign", "rank"] = Field(
        "sign", description="sign: positive vs negative influence; rank: above vs below the prompt's median"
    )
    min_margin: float = Field(0.0, ge=0.0, description="drop pairs whose margin (in the signal's units) is below this")
    signal: Literal["influence", "random", "student_loss"] = Field(
        "influence",
        description="which sample of a prompt is preferred: influence (the paper: local data influence on the "
        "reference loss, against the baseline); random (control: each prompt's influence scores shuffled among its "
        "samples, seeded with runtime.seed: same prompts, pair counts and margins, random choice); student_loss "
        "(the paper's training-loss ablation: the warm student's own loss on the candidate, HIGHER loss preferred, "
        "i.e. teach what the student has not learned yet; measured from the candidates' mean loss, so under rule "
        "sign harder-than-average beats easier-than-average)",
    )
    target: Literal["instruction", "raw_output"] = Field(
        "instruction",
        description="which text DPO prefers: instruction (the parsed instruction, re-tagged) or raw_output (the "
        "teacher's sampled output as it was, reason and tags included, as the official code)",
    )
    review: Literal["off", "required"] = Field(
        "off",
        description="required: the pipeline stops before teacher_checkpoint until a person has reviewed the pairs "
        "(`montessori review export` writes the sheet; mark each pair keep, drop or swap and set data.pair_review "
        "to the file); the teacher then trains on the kept and swapped pairs only. off: DPO on every pair",
    )


class DecontaminationSettings(StrictResource):
    """Generated rows (round candidates, the student dataset, the baseline) checked against the reference and
    held-out sets: a shared word n-gram or a ROUGE-L near-duplicate marks a row contaminated."""

    action: Literal["drop", "block", "warn"] = Field(
        "drop",
        description="drop: a contaminated row is filtered like any rejected sample (verdict contaminated, kept "
        "in the candidates table with its match); block: rows are kept and marked, and a blocking check fails "
        "naming them; warn: rows are kept and marked, and the check only warns",
    )
    ngram: int = Field(13, gt=0, description="words two long texts must share in a row (GPT-3's 13-gram)")
    min_ngram: int = Field(
        8, gt=0, description="a text shorter than ngram words matches when all of it (at least this many words) is "
        "shared; shorter texts are judged by ROUGE-L only (GPT-3's floor: shorter runs collide by chance)",
    )
    rouge_threshold: float = Field(
        0.7, gt=0.0, le=1.0,
        description="near-duplicate when the ROUGE-L F1 of an instruction (answer) against a set instruction "
        "(response) is above this",
    )

    def params(self) -> DecontaminationParams:
        """The decontamination engine's parameters."""
        return by_name(DecontaminationParams, self)


class LoraSettings(StrictConfig):
    """Optional LoRA (peft) adapter for the teacher's DPO; merged into the weights before the checkpoint is saved."""

    enabled: bool = Field(False, description="train a LoRA adapter instead of every weight")
    r: int = Field(16, gt=0, description="adapter rank")
    alpha: int = Field(32, gt=0, description="adapter scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        ["all-linear"], description="module names to adapt, or [all-linear] (every linear layer but the output head)"
    )

    def params(self) -> LoraParams | None:
        """The adapter's engine parameters, or None when disabled."""
        if not self.enabled:
            return None
        targets = "all-linear" if self.target_modules == ["all-linear"] else list(self.target_modules)
        return by_name(LoraParams, self, target_modules=targets)


ACTIVATION_CHECKPOINTING = (
    "recompute activations during backward to save memory (TRL's default is on): turn on for models that do not "
    "fit; the same weights either way, and off is faster on small models (benchmarks/activation_checkpointing.py)"
)


class DPOSettings(StrictResource):
    """Teacher DPO with TRL (paper defaults: beta 0.1, lr 1e-6, 1 epoch, batch 2)."""

    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"activation_checkpointing"})  # memory and speed only
    beta: float = Field(0.1, gt=0.0)
    learning_rate: float = Field(1e-6, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(2, gt=0, description="global batch; split across processes under accelerate")
    max_length: int = Field(512, gt=8)
    lora: LoraSettings = LoraSettings()
    activation_checkpointing: bool = Field(False, description=ACTIVATION_CHECKPOINTING)

    def params(self, seed: int) -> DPOParams:
        """The DPO engine's parameters (with the LoRA adapter when enabled)."""
        return by_name(DPOParams, self, seed=seed, lora=self.lora.params())


class FinalPromptSettings(StrictResource):
    """The final synthesis prompts, shared by the tuned teacher's dataset and the Self-Instruct baseline."""

    num_prompts: int = Field(12, gt=0)
    seed_offset: int = Field(1000, description="added to the seed so final prompts differ from round prompts")


class StudentDatasetSettings(FinalPromptSettings):
    """The final dataset written by the tuned teacher."""

    order: Literal["generated", "curriculum"] = Field(
        "generated",
        description="curriculum: score every row's influence with the warm student and put the most helpful first",
    )
    sample_weights: bool = Field(
        False, description="score every row's influence and add a sample_weight column (mean 1, higher = helps more)"
    )
    select: Literal["none", "top_influence", "bottom_influence", "random", "top_student_loss"] = Field(
        "none",
        description="keep only a share of the rows (resources/preference/selection.py): none (every row); "
        "top_influence / bottom_influence (highest / lowest influence from the warm student on the reference set); "
        "random (seeded with runtime.seed); top_student_loss (the rows the warm student finds hardest). Ties by "
        "candidate_id; scored rules add the score column(s)",
    )
    select_share: float = Field(
        0.5, gt=0.0, le=1.0,
        description="share of the rows select keeps (rounded half up, at least 1); also the size of the effect "
        "experiment's selection arms",
    )

    @property
    def scores_influence(self) -> bool:
        """Whether the final rows must be scored with the warm student."""
        return self.order == "curriculum" or self.sample_weights or self.selection(0).score_column is not None

    def selection(self, seed: int, rule: str | None = None) -> SelectionParams:
        """The selection engine's parameters (``rule``: another rule at this share, as the experiment's arms use)."""
        return SelectionParams(rule=rule or self.select, share=self.select_share, seed=seed)

    def prompts(self) -> FinalPromptSettings:
        """Only the prompt settings (what the baseline shares with this dataset)."""
        return FinalPromptSettings(num_prompts=self.num_prompts, seed_offset=self.seed_offset)


class EvaluationSettings(StrictResource):
    """Student evaluation: SFT on the Montessori and Self-Instruct datasets, loss on the held-out set."""

    # max_diversity_drop is read by a check only; activation_checkpointing changes memory and speed only
    UNVERSIONED: ClassVar[frozenset[str]] = frozenset({"max_diversity_drop", "activation_checkpointing"})
    seeds: list[int] = Field([0, 1], min_length=1, description="one SFT run per seed and dataset")
    learning_rate: float = Field(2e-5, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(4, gt=0)
    max_length: int = Field(256, gt=8)
    judge: str | None = Field(
        None, description="model (same forms as models.teacher) judging the two students' answers pairwise; "
        "null: no judge"
    )
    judge_max_new_tokens: int = Field(64, gt=0, description="length of the students' answers shown to the judge")
    max_diversity_drop: float = Field(
        0.2, ge=0.0, le=1.0,
        description="warn when the tuned teacher's distinct-2 falls more than this share below the baseline's",
    )
    activation_checkpointing: bool = Field(False, description=ACTIVATION_CHECKPOINTING)

    def sft_params(self) -> SFTParams:
        """The student SFT engine's parameters."""
        return by_name(SFTParams, self)

