"""Typed configuration of the whole pipeline, loaded from ``pipelines.yaml``.

One nested model per stage, torchtitan-style. ``load_config`` reads a YAML file, applies
``--set dotted.key=value`` overrides and validates; every output folder gets the resolved
config saved beside it (``save_config``). Paths may use ``{workdir}``; they are expanded by
``PipelineConfig.path``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_CONFIG_FILE = "pipelines.yaml"
REFERENCE_LAYERS = [0, 4, 8, 12, 16, 20, 24, 27]
KNOWN_THINKER_DEPTHS = {"Qwen/Qwen3-VL-2B-Thinking": 28}
"""Decoder depth of thinkers known without loading them (REFERENCE.md); other models are
checked against their own config when the engine opens them (thinkjepa.extract.layers)."""


class _Section(BaseModel):
    # NaN and inf are refused in every float field: a NaN learning rate trained into a NaN loss
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


def at_least(low: int | float, *, optional: bool = False):
    """A field check: the value (each value of a list) is >= ``low``; None passes if ``optional``."""

    def check(v: Any) -> Any:
        values = v if isinstance(v, (list, tuple)) else [v]
        if v is None and optional:
            return v
        bad = [x for x in values if x is None or x < low]
        if bad:
            raise ValueError(f"must be >= {low}{' (or null)' if optional else ''}, got {v!r}")
        return v

    return check


def positive(v: Any) -> Any:
    """A field check: > 0 (None passes: optional fields mean "off")."""
    if v is not None and not v > 0:
        raise ValueError(f"must be > 0, got {v!r}")
    return v


def fraction(v: Any, *, open_top: bool = False) -> Any:
    if not (0 <= v < 1 if open_top else 0 <= v <= 1):
        raise ValueError(f"must be in [0, 1{')' if open_top else ']'}, got {v!r}")
    return v


class DataConfig(_Section):
    root: str | None = None
    """EgoDex-layout dataset root (``<task>/<episode>.mp4|.hdf5``)."""
    manifest: str = "{workdir}/manifest.parquet"
    split_seed: int = 42
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """train / val / test shares of the split groups (task folders or episodes, see split_by)."""
    split_by: Literal["auto", "task", "episode"] = "auto"
    """Group of the split: ``task`` (no task folder in two splits: tests cross-task
    generalisation), ``episode`` (for small folders), ``auto`` = task with 3 or more task
    folders, else episode with a warning (thinkjepa.data.manifest.split_groups)."""
    fps: float | None = 30.0
    """The frame rate every video must have (EgoDex records at 30): sampling counts frames, so a
    video at another rate is left out at indexing, naming the clip. None accepts any constant
    rate. Variable-rate videos are always left out."""

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not 0 <= f <= 1 for f in v) or abs(sum(v) - 1) > 0.01 or v[0] <= 0:
            raise ValueError(f"must be three shares in [0, 1] summing to 1 (train > 0), e.g. [0.8, 0.1, 0.1]; got {list(v)}")
        return v

    _fps = field_validator("fps")(positive)


class SamplingConfig(_Section):
    """Which frames each branch sees for a forecast made at frame t (see thinkjepa.sampling)."""

    mode: Literal["split_half", "stride"] = "split_half"
    """``split_half``: the reference code's rule (t = T//2, linspace over each half, the
    thinker sees the same past frames). ``stride``: a dense past window of ``past_frames`` at
    ``stride`` ending at t-1, future targets from t, thinker frames uniform over a longer span."""
    past_frames: int = 32
    future_frames: int = 32
    stride: int = 1
    thinker_frames: int = 32
    thinker_span: int | None = None
    """How far back (frames before t) the thinker looks in ``stride`` mode; None = from frame 0."""
    thinker_stop: Literal["forecast", "dense"] = "forecast"
    """Where the thinker's frames end in ``stride`` mode: ``forecast`` (up to t-1, the
    reference: the VLM sees the dense frames too) or ``dense`` (up to the frame before the
    dense window, so the two branches see disjoint frames and the guidance can carry only what
    the long-range past shows — the guidance benchmark's setting)."""
    windows_per_clip: int = 1
    window_hop: int | None = None
    """Frames between successive forecast times when ``windows_per_clip`` > 1 (default: future_frames)."""
    horizon_steps: int = Field(default=1, ge=1)
    """``stride`` mode: every window leaves room after t for this many blocks of ``future_frames``
    (the latest window ends ``horizon_steps`` blocks before the episode's end), so a rollout of
    that many steps covers every window, not only the earliest. 1: the window's own future."""

    _frames = field_validator("past_frames", "future_frames", "stride", "thinker_frames", "windows_per_clip")(at_least(1))
    _optional_frames = field_validator("thinker_span", "window_hop")(at_least(1, optional=True))

    @model_validator(mode="after")
    def _thinker_frames_fit(self) -> SamplingConfig:
        dense = self.stride * self.past_frames
        if self.mode == "stride" and self.thinker_stop == "dense" and self.thinker_span is not None \
                and self.thinker_span <= dense:
            raise ValueError(f"sampling.thinker_span={self.thinker_span} must be > stride * past_frames = {dense} with "
                             "thinker_stop=dense: the thinker's frames lie before the dense window")
        return self


class ThinkerConfig(_Section):
    """Stage one: the frozen VLM thinker and its hidden-state extraction."""

    model: str = "Qwen/Qwen3-VL-2B-Thinking"
    revision: str | None = None
    backend: Literal["vllm", "transformers"] = "vllm"
    capture: Literal["auto", "hooks", "speculative"] = "auto"
    """How the vLLM backend reads the hidden states (extract/backend_vllm.py): ``speculative``,
    vLLM's ``extract_hidden_states`` method (works with CUDA graphs); ``hooks``, forward hooks
    on the plain engine (eager only: no verify token per decode step); ``auto``, hooks where
    the engine runs eagerly anyway (no CUDA device), speculative elsewhere. Both store the
    same layers (the parity test checks each against transformers)."""
    layers: list[int] = Field(default_factory=lambda: list(REFERENCE_LAYERS))
    """Decoder-layer outputs to store (0-based; see thinkjepa.extract.layers for the convention)."""
    frame_size: int = 256
    max_new_tokens: int = 16
    prompt_template: str = (
        "Describe this video. Task: {task}. Scene: {description}. Environment: {environment}."
    )
    max_prefill_tokens: int = 1280
    storage_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    clips_per_call: int = 8
    """How many clips go to the engine in one ``generate`` call."""
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    load_format: str = "auto"
    cache: str = "{workdir}/cache/vlm.zarr"

    _counts = field_validator("frame_size", "max_new_tokens", "max_prefill_tokens", "clips_per_call",
                              "tensor_parallel_size")(at_least(1))
    _model_len = field_validator("max_model_len")(at_least(1, optional=True))

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _memory_share(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"must be in (0, 1], got {v!r}")
        return v

    @model_validator(mode="after")
    def _layers_in_depth(self) -> ThinkerConfig:
        if not self.layers or any(x < 0 for x in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"thinker.layers must be distinct layer indices >= 0, got {self.layers}")
        depth = KNOWN_THINKER_DEPTHS.get(self.model)
        if depth is not None and max(self.layers) >= depth:
            raise ValueError(f"thinker.layers {[x for x in self.layers if x >= depth]} out of range for {self.model}: "
                             f"it has {depth} decoder layers (valid 0..{depth - 1})")
        return self


class EncoderConfig(_Section):
    """Frozen V-JEPA2 encoder that turns past and future windows into latents."""

    model: str = "facebook/vjepa2-vitl-fpc64-256"
    revision: str | None = None
    frame_size: int = 256
    batch_size: int = 4
    storage_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    cache: str = "{workdir}/cache/jepa.zarr"

    _counts = field_validator("frame_size", "batch_size")(at_least(1))


class ModelConfig(_Section):
    variant: Literal["thinkjepa", "jepa_only", "vlm_only", "jepa_matched"] = "thinkjepa"
    """``jepa_matched``: thinkjepa's modules and trainable parameters, its guidance replaced by
    a window-independent constant (the capacity-matched JEPA-only baseline, train/model.py)."""
    pred_depth: int = 12
    pred_width: int = 384
    pred_heads: int = 6
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    drop_path: float = 0.1
    use_rope: bool = True
    init_predictor_from: str | None = None
    """Optional V-JEPA2 checkpoint id/path whose predictor weights initialise ours."""
    injection: Literal["film", "cross_attn", "none"] = "film"
    layer_selector: Literal["all", "last", "mid"] | list[int] = "all"
    streams: Literal["both", "prefill", "generated"] = "both"
    guidance_dim: int = 384
    film_hidden: int = 512
    guidance_tokens: int = 64
    """Tokens per stream kept for cross-attention guidance (padded/truncated)."""
    head_hidden: int = 512
    head_heads: int = 8
    head_residual: bool = True
    """Head predicts offsets from the last observed joints (batch ``past_joints_cam``) when given."""
    offset_scale: bool = True
    """Residual head: the offsets are predicted in units of their train-split RMS (set by
    training, stored in the checkpoint) and the joint loss is taken in those units, so metre-
    scale targets neither vanish next to the latent loss nor need a special learning rate.
    Metrics stay in metres."""
    pooling: Literal["all", "vision", "frame_groups"] = "all"
    """How the prefill stream's token states become guidance vectors: ``all`` (the reference's
    all-token mean), ``vision`` (mean of the vision tokens only: the prompt text is the same
    per task and carries no per-clip signal) or ``frame_groups`` (one vision mean per thinker
    frame group, so the cue's frames are not averaged away by the others)."""
    pool_groups: list[int] | None = None
    """Diagnostic only: with ``frame_groups``, keep just these frame-group indices. Choosing the
    groups that show a synthetic cue uses knowledge of the generator; never a default."""
    guidance_norm: bool = True
    """Standardise pooled guidance per stored layer and channel with train-split statistics."""
    injection_init: Literal["zero_out", "zero_gate"] = "zero_out"
    """``zero_out``: gates open, last modulation layer zero (gradient from step 0);
    ``zero_gate``: the reference code's tanh(0) gates (see train/injection.py)."""
    state_tokens: bool = False
    """Feed the observed hand state (the joints of every past frame, in the camera frame of the
    last observed frame) to the predictor as one extra token per past tubelet, as V-JEPA2-AC
    feeds its end-effector state (train/state.py). Off: the paper's model, bit for bit."""
    motion_prior: Literal["none", "constant_velocity"] = "none"
    """What the residual head's offsets are taken around (train/head.py:
    ``constant_velocity_anchor``). ``none``: the last observed pose (the paper's model, bit for
    bit). ``constant_velocity``: the constant-velocity extrapolation of the two newest observed
    states, so the model starts at the physics baseline and learns only the deviation from it.
    Needs ``state_tokens`` (a rollout carries the forecast state forward) and ``head_residual``.
    ``vlm_only`` keeps the last-pose anchor: the state is dense information it must not read."""

    @model_validator(mode="after")
    def _motion_prior_needs_state(self) -> ModelConfig:
        if self.motion_prior != "none" and not (self.state_tokens and self.head_residual):
            raise ValueError(
                f"model.motion_prior={self.motion_prior} extrapolates the observed hand state and adds the head's "
                f"residual to it: it needs model.state_tokens=true and model.head_residual=true "
                f"(got state_tokens={self.state_tokens}, head_residual={self.head_residual})"
            )
        return self

    _sizes = field_validator("pred_depth", "pred_width", "pred_heads", "guidance_dim", "film_hidden",
                             "guidance_tokens", "head_hidden", "head_heads")(at_least(1))
    _ratio = field_validator("mlp_ratio")(positive)
    _drop = field_validator("dropout", "drop_path")(lambda v: fraction(v, open_top=True))
    _groups = field_validator("pool_groups")(at_least(0, optional=True))

    @field_validator("layer_selector")
    @classmethod
    def _selector(cls, v: Any) -> Any:
        if isinstance(v, list) and (not v or any(x < 0 for x in v)):
            raise ValueError(f"a list of stored-layer indices >= 0 (at least one), got {v!r}")
        return v

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.pred_width % self.pred_heads:
            raise ValueError(f"model.pred_width={self.pred_width} must be divisible by model.pred_heads={self.pred_heads}")
        return self


class TrainConfig(_Section):
    out: str = "{workdir}/train"
    epochs: int = 200
    max_steps: int | None = None
    batch_size: int = 16
    """Global batch: split evenly over the processes of a multi-process run."""
    lr_predictor: float = 1e-4
    lr_head: float = 1e-3
    weight_decay: float = 1e-4
    lr_milestones: tuple[float, ...] = (1 / 3, 2 / 3)
    lr_gamma: float = 0.1
    joint_loss_weight: float = 1.0
    latent_loss_weight: float = 1.0
    rollout_steps: int = 1
    """Rollout steps the training loss covers (V-JEPA2-AC's rollout loss): the model is rolled
    out ``rollout_steps`` steps from each window, as ``tj-eval`` rolls it out, with gradients
    through every step, and the joint loss covers every step's frames (the latent loss only
    step 1's, the one step whose encoded future the cache holds). 1 is the paper's one-step
    recipe. Needs ``sampling.horizon_steps`` >= this, so every window has the frames. Why: an
    event that happens only after the first step's frames is never a training target
    otherwise, so no guidance about it can be learned (issue 28, rollout benchmark v3)."""
    rollout_mode: Literal["shifted", "predicted"] = "shifted"
    """How the training rollout feeds each step's forecast to the next (``ThinkJEPA.rollout``)."""
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = "auto"
    seed: int = 0
    """Seed of one run; ``tj-train`` sets it to each entry of ``seeds`` in turn."""
    seeds: list[int] = Field(default_factory=lambda: [0])
    """Every seed ``tj-train`` trains, each into ``<out>/<variant>/seed-<s>/``; ``tj-eval``
    reports mean +- std over them."""
    num_workers: int = 2
    checkpoint_every: int = 500
    eval_every: int = 1
    """Validation every N epochs (selects the best checkpoint by val ADE)."""
    val_every_steps: int | None = None
    """Validation every N optimizer steps instead of every ``eval_every`` epochs. Either way
    validation also runs at step 0, so ``best.pt`` can be the untrained model (and says so)."""
    grad_clip: float | None = 1.0
    dist_timeout_s: float = 1800.0
    """Seconds a collective (multi-process barrier, all-reduce) may wait before failing."""
    cache_samples: bool = False
    """Keep every train/val sample in memory after its first read (small datasets only)."""
    num_threads: int | None = None
    """torch intra-op threads for training (None: torch's default). Tiny models on a busy
    CPU run several times faster on one thread than on two that wait for each other."""
    log_with: list[Literal["tensorboard", "wandb", "mlflow", "none"]] = Field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers, through accelerate's (``Accelerator(log_with=...)``); ``[none]``
    logs nothing. TensorBoard writes under ``<run>/tb``."""

    _counts = field_validator("epochs", "batch_size", "eval_every", "rollout_steps")(at_least(1))
    _optional_counts = field_validator("max_steps", "val_every_steps", "num_threads")(at_least(1, optional=True))
    _non_negative = field_validator("num_workers", "checkpoint_every", "weight_decay", "joint_loss_weight",
                                    "latent_loss_weight", "seed", "seeds")(at_least(0))
    _rates = field_validator("lr_predictor", "lr_head", "lr_gamma", "grad_clip", "dist_timeout_s")(positive)

    @field_validator("lr_milestones")
    @classmethod
    def _milestones(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < m < 1 for m in v) or list(v) != sorted(v):
            raise ValueError(f"must be increasing fractions of training in (0, 1), got {list(v)}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"must be one or more distinct seeds, got {v!r}")
        return v


class EvalConfig(_Section):
    out: str = "{workdir}/eval"
    variants: list[str] = Field(default_factory=lambda: ["thinkjepa", "jepa_only", "vlm_only"])
    split: Literal["val", "test"] = "test"
    acc_threshold_m: float = 0.05
    rollout_steps: int = 4
    """Recursive rollout steps of ``future_frames`` each; fewer are reported (with a note) when
    no window of the split has that many frames left in its episode."""
    rollout_modes: list[Literal["shifted", "predicted"]] = Field(default_factory=lambda: ["shifted", "predicted"])
    """How a step's forecast becomes the next context (``ThinkJEPA.rollout``): ``shifted`` keeps
    the newest past tubelets of [context; predicted], ``predicted`` uses the predicted ones alone,
    resampled to the past length (the two coincide when past and future have as many tubelets)."""
    overlay_windows: int = 3
    """Trajectory overlays for this many windows of largest gain and of largest loss vs jepa_only."""
    bootstrap: int = 2000
    """Paired bootstrap resamples for the 95% intervals of ADE differences."""

    _counts = field_validator("rollout_steps", "bootstrap")(at_least(1))
    _overlays = field_validator("overlay_windows")(at_least(0))
    _threshold = field_validator("acc_threshold_m")(positive)

    @field_validator("variants", "rollout_modes")
    @classmethod
    def _not_empty(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("must name at least one")
        return v


class DemoConfig(_Section):
    """What ``tj demo`` synthesises when it is given no data root."""

    generator: Literal["guidance_v2", "rollout_v3", "v1"] = "guidance_v2"
    """``guidance_v2``: the guidance benchmark (thinkjepa/data/synth_v2.py); ``rollout_v3``: the
    rollout benchmark (thinkjepa/data/synth_v3.py, laid out for ``sampling``); ``v1``: the first
    toy (kept reproducible; its future does not depend on the dense window)."""
    mode: Literal["cued", "shuffled", "absent", "fixed_turn", "fixed_event"] = "cued"
    """guidance_v2 / rollout_v3: the cue shows the turn (``cued``), a random class (``shuffled``) or
    nothing (``absent``); a diagnosis with no cue and one turn class for every episode is
    ``fixed_turn`` (v2) or ``fixed_event`` (v3)."""
    scenes: int = 24
    episodes_per_scene: int = 8
    n_frames: int = 48
    episodes: int = 12
    """v1 only: number of episodes."""
    seed: int = 0

    _counts = field_validator("scenes", "episodes_per_scene", "n_frames", "episodes")(at_least(1))
    _seed = field_validator("seed")(at_least(0))


BUILTIN_VARIANTS = ("thinkjepa", "jepa_only", "vlm_only", "jepa_matched")
_VARIANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_variant_name(name: str) -> str:
    """Variant names become run-folder names: one plain path component, nothing else."""
    if not isinstance(name, str) or not _VARIANT_RE.match(name) or name in (".", ".."):
        raise ValueError(f"variant name {name!r} must match {_VARIANT_RE.pattern} (it names a run folder)")
    return name


class PipelineConfig(_Section):
    workdir: str = "runs/default"
    data: DataConfig = Field(default_factory=DataConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    thinker: ThinkerConfig = Field(default_factory=ThinkerConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Named variants: dotted overrides (e.g. ``model.streams: prefill``) on top of this config."""

    @field_validator("workdir")
    @classmethod
    def _workdir_named(cls, v: str) -> str:
        # "" would expand {workdir}/manifest.parquet to /manifest.parquet: outputs in the file system root
        if not v.strip():
            raise ValueError("must name a folder (it holds every output), e.g. runs/egodex")
        return v

    @field_validator("variants")
    @classmethod
    def _variant_keys_are_dotted(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, overrides in v.items():
            check_variant_name(name)
            for key in overrides:
                if "." not in key:
                    raise ValueError(f"variant {name!r}: override key {key!r} must be dotted, e.g. model.streams")
        return v

    @model_validator(mode="after")
    def _rollout_fits(self) -> PipelineConfig:
        if self.train.rollout_steps > 1 and (self.sampling.mode != "stride"
                                             or self.sampling.horizon_steps < self.train.rollout_steps):
            raise ValueError(
                f"train.rollout_steps={self.train.rollout_steps} needs sampling.mode=stride with sampling.horizon_steps "
                f">= {self.train.rollout_steps} (got mode {self.sampling.mode!r}, horizon_steps "
                f"{self.sampling.horizon_steps}): every training window must have the frames of every step")
        return self

    @model_validator(mode="after")
    def _variants_apply(self) -> PipelineConfig:
        # Typos surface when the config loads, not hours into a run: every named variant must
        # apply cleanly, and every variant to evaluate must exist.
        known = set(self.variants) | set(BUILTIN_VARIANTS)
        unknown = [v for v in self.eval.variants if v not in known]
        if unknown:
            raise ValueError(f"eval.variants names unknown variant(s) {unknown}; known: {sorted(known)}")
        for name, overrides in self.variants.items():
            if not overrides:
                continue
            data = self.model_dump()
            data["variants"] = {k: {} for k in self.variants}  # names kept, not re-applied
            try:
                for key, value in overrides.items():
                    _set_dotted(data, key, value)
                PipelineConfig.model_validate(data)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"variant {name!r} does not apply: {e}") from e
        return self

    def path(self, template: str) -> Path:
        """Expand ``{workdir}`` in a path field."""
        return Path(template.format(workdir=self.workdir))

    def url(self, template: str) -> str:
        """Like ``path`` but keeps fsspec URLs (``memory://``, ``s3://``) intact."""
        return template.format(workdir=self.workdir)

    def for_variant(self, name: str) -> PipelineConfig:
        """This config with variant ``name`` applied (built-in names need no entry)."""
        data = self.model_dump()
        overrides = dict(self.variants.get(name, {}))
        if name not in self.variants and name not in BUILTIN_VARIANTS:
            raise KeyError(f"unknown variant {name!r}; known: {sorted(set(self.variants) | set(BUILTIN_VARIANTS))}")
        overrides.setdefault("model.variant", name if name in BUILTIN_VARIANTS else data["model"]["variant"])
        for key, value in overrides.items():
            _set_dotted(data, key, value)
        return PipelineConfig.model_validate(data)

    def section_fingerprint(self, *sections: str) -> str:
        """Stable hash of the named sections: what a stage's outputs depend on. Place-free
        (``provenance.portable``): a copied or moved workdir keeps its fingerprints."""
        from thinkjepa.provenance import portable

        dump = self.model_dump(mode="json")
        if dump["data"].get("root"):  # the data is identified by its listing (the index stamp), not its place
            dump["data"]["root"] = "{data.root}"
        payload = portable({s: _get_dotted(dump, s) for s in sections}, self.workdir)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _get_dotted(data: dict[str, Any], key: str) -> Any:
    cur: Any = data
    for part in key.split("."):
        cur = cur[part]
    return cur


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for part in parts[:-1]:
        if part not in cur or not isinstance(cur[part], dict):
            cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value) with the value parsed as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not of the form dotted.key=value")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    use_default_file: bool = True,
) -> PipelineConfig:
    """Load ``path`` (default ``pipelines.yaml`` if present), apply overrides, validate.

    ``base`` is a dict the file is layered on (the demo's embedded defaults)."""
    data: dict[str, Any] = copy.deepcopy(base) if base else {}
    if path is None and use_default_file and Path(DEFAULT_CONFIG_FILE).exists():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file {p} not found (pass --config FILE)")
        try:
            loaded = read_yaml(p.read_text()) or {}
        except yaml.YAMLError as e:  # its own text says "<unicode string>": name the file
            raise ValueError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: top level must be a mapping")
        _deep_update(data, loaded)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    return validate_config(data)


class ConfigError(ValueError):
    """A config value out of its range or of the wrong type: one line per key, with what is allowed."""


def validate_config(data: dict[str, Any]) -> PipelineConfig:
    """``PipelineConfig.model_validate`` with pydantic's report turned into ``key: problem`` lines."""
    from pydantic import ValidationError

    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = str(err["msg"]).removeprefix("Value error, ")
            given = err.get("input")
            shown = "" if isinstance(given, dict) or f"{given!r}" in msg else f" (got {given!r})"
            lines.append(f"{key}: {msg}{shown}")
        raise ConfigError("; ".join(lines)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[arg-type]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1}): give each key once",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """YAML as the config reads it: safe, and a duplicate key is an error."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _deep_update(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def save_config(cfg: PipelineConfig, folder: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside an output so every artefact says how it was made."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name
    out.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return out
