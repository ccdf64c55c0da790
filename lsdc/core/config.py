"""One typed Config for every stage: dataclasses with a docstring per field, validated on creation.

A bad value raises :class:`InputError` naming the key. Building a Config from a YAML file and
``--key=value`` overrides (and listing the fields with their docstrings in ``lsdc VERB -h``) is
:mod:`lsdc.core.overrides`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import InputError
from .schema import VIEWS

CONFIG_FILENAME = "config.yaml"


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise InputError(f"config key {key!r}: {msg}")


@dataclass
class CropSpec:
    """How one view's samples are cut from a series (written into the store, read back by all)."""

    crop_mm: float = 40.0
    """Side of the square in-plane field of view the model sees, in millimetres."""
    out_px: int = 128
    """Side of the model's input image in pixels (the crop_mm field resampled to this size)."""
    slices: int = 7
    """Slices the model sees per sample, centred on the labelled slice."""
    slice_margin: int = 2
    """Extra slices stored on each side so the loader can shift the slice window."""
    fov_margin: float = 0.15
    """Extra field of view stored around the crop (fraction of crop_mm) for translation/rotation jitter."""

    def __post_init__(self):
        _check(self.crop_mm > 0, "crop_mm", f"must be > 0, got {self.crop_mm}")
        _check(self.out_px >= 16, "out_px", f"must be >= 16, got {self.out_px}")
        _check(self.slices >= 1 and self.slices % 2 == 1, "slices", f"must be odd and >= 1, got {self.slices}")
        _check(self.slice_margin >= 0, "slice_margin", f"must be >= 0, got {self.slice_margin}")
        _check(0 <= self.fov_margin < 1, "fov_margin", f"must be in [0, 1), got {self.fov_margin}")

    @property
    def store_px(self) -> int:
        """Stored in-plane size: out_px plus the fov margin, rounded up to an even number."""
        px = int(round(self.out_px * (1 + self.fov_margin)))
        return px + (px % 2 != self.out_px % 2)

    @property
    def store_mm(self) -> float:
        """Stored field of view in mm (same mm/px as the model input)."""
        return self.crop_mm * self.store_px / self.out_px

    @property
    def store_slices(self) -> int:
        return self.slices + 2 * self.slice_margin


@dataclass
class PreprocessConfig:
    """The one-time DICOM -> Zarr conversion."""

    sagittal_t2: CropSpec = field(default_factory=lambda: CropSpec(crop_mm=40.0))
    """Spinal canal crops, one per (study, level), centred on the labelled canal point."""
    sagittal_t1: CropSpec = field(default_factory=lambda: CropSpec(crop_mm=40.0))
    """Neural foramen crops, one per (study, level, side)."""
    axial_t2: CropSpec = field(default_factory=lambda: CropSpec(crop_mm=45.0))
    """Subarticular crops, one per (study, level, side)."""
    norm_low_pct: float = 0.5
    """Lower intensity percentile over the whole series, mapped to grey 0."""
    norm_high_pct: float = 99.5
    """Upper intensity percentile over the whole series, mapped to grey 255."""
    norm_max_voxels: int = 1 << 18
    """The window percentiles are taken over at most this many voxels of the series: a regular lattice
    (every k-th voxel, k coprime with the row length, so every slice, row and column is visited);
    0 = every voxel. 2**18 voxels pin the 0.5/99.5 percentiles to well under one grey level (tested)."""
    chunk_samples: int = 32
    """Samples per Zarr chunk (several per chunk amortise zarr's ~1 ms per read call)."""
    volume_px: int = 128
    """In-plane size of the small whole-series sagittal volume kept for the level localiser."""
    volume_slices: int = 16
    """Slices of that volume (resampled along the slice axis)."""

    def __post_init__(self):
        _check(0 <= self.norm_low_pct < self.norm_high_pct <= 100, "norm_low_pct",
               f"need 0 <= norm_low_pct < norm_high_pct <= 100, got {self.norm_low_pct}, {self.norm_high_pct}")
        _check(self.norm_max_voxels == 0 or self.norm_max_voxels >= 4096, "norm_max_voxels",
               f"must be 0 (all voxels) or >= 4096, got {self.norm_max_voxels}")
        _check(self.chunk_samples >= 1, "chunk_samples", f"must be >= 1, got {self.chunk_samples}")
        _check(self.volume_px >= 16, "volume_px", f"must be >= 16, got {self.volume_px}")
        _check(self.volume_slices >= 1, "volume_slices", f"must be >= 1, got {self.volume_slices}")

    def spec(self, view: str) -> CropSpec:
        return getattr(self, view)


BACKENDS = ("auto", "dali", "torch")


@dataclass
class LoaderConfig:
    """Reading the store into batches, and augmentation (one draw per sample, all slices alike)."""

    backend: str = "auto"
    """Loader backend: auto (DALI when it imports, else torch), dali or torch."""
    workers: int = 2
    """Loader worker processes (torch) / reader threads (DALI)."""
    shuffle_buffer: int = 256
    """Samples held in the quasi-random shuffle buffer fed by whole chunks."""
    balanced: bool = False
    """Class-balanced oversampling (the seed's) instead of one pass over every sample."""
    augment: bool = True
    """Apply augmentation to the training split."""
    max_slice_shift: int = 2
    """Largest slice-window shift in slices (must be <= the stored slice_margin)."""
    slice_shift_probs: tuple = ()
    """Relative weights of |shift| = 0, 1, 2, ... slices (each sign half of it); weights beyond
    max_slice_shift are dropped, missing ones are 0; () = uniform over [-max_slice_shift, max_slice_shift]."""
    rotate_deg: float = 15.0
    """Largest in-plane rotation in degrees."""
    scale_range: float = 0.1
    """Scale drawn uniformly from [1 - scale_range, 1 + scale_range]."""
    translate_frac: float = 0.03
    """Largest translation as a fraction of out_px (kept within the stored fov margin): 0.03 = +-1.2 mm
    on a 40 mm crop, about the localiser's in-plane error (median 0.76 mm). 0.07 (+-2.8 mm) cost the
    foraminal skill 0.49 at the true points (`lsdc bench quality`, 150 studies, 3 seeds)."""
    brightness: float = 0.15
    """Largest additive brightness change (fraction of full scale)."""
    contrast: float = 0.2
    """Contrast factor drawn from [1 - contrast, 1 + contrast]."""
    gamma: float = 0.2
    """Gamma drawn from [1 - gamma, 1 + gamma]."""
    noise_std: float = 0.03
    """Largest Gaussian noise standard deviation (fraction of full scale)."""
    channels: int = 3
    """Channels per slice fed to the model: 3 grey copies (ImageNet stems) or 1."""

    def __post_init__(self):
        _check(self.backend in BACKENDS, "backend", f"must be one of {BACKENDS}, got {self.backend!r}")
        _check(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        _check(self.shuffle_buffer >= 1, "shuffle_buffer", f"must be >= 1, got {self.shuffle_buffer}")
        _check(self.max_slice_shift >= 0, "max_slice_shift", f"must be >= 0, got {self.max_slice_shift}")
        _check(0 <= self.scale_range < 1, "scale_range", f"must be in [0, 1), got {self.scale_range}")
        _check(self.channels in (1, 3), "channels", f"must be 1 or 3, got {self.channels}")
        self.slice_shift_probs = tuple(float(w) for w in self.slice_shift_probs)
        _check(all(w >= 0 for w in self.slice_shift_probs)
               and (not self.slice_shift_probs or sum(self.slice_shift_probs[:self.max_slice_shift + 1]) > 0),
               "slice_shift_probs",
               f"need weights >= 0 with a positive one within max_slice_shift, got {list(self.slice_shift_probs)}")
        for k in ("rotate_deg", "translate_frac", "brightness", "contrast", "gamma", "noise_std"):
            _check(getattr(self, k) >= 0, k, f"must be >= 0, got {getattr(self, k)}")


ATTENTIONS = ("tanh", "gated")


@dataclass
class ModelConfig:
    """The seed's v9 model: timm backbone per slice -> BiGRU -> attention MIL -> level embedding -> head."""

    backbone: str = "tf_efficientnetv2_s"
    """Any timm model name (CPU tests use timm's tiny test_* models)."""
    pretrained: bool = False
    """Start the backbone from timm's pretrained weights: timm.create_model(backbone, pretrained=True)
    downloads them from the Hugging Face hub into the huggingface_hub cache (HF_HOME) on first use
    and reads the cache after that (HF_HUB_OFFLINE=1: cache only). Unreachable hub and not cached,
    or no weights for this backbone: a one-line error. Off by default, so tests and the demo never
    download; ignored when checkpoint_path is set."""
    checkpoint_path: str = ""
    """Local backbone weights file (.safetensors, or a .pth/.pt/.bin torch pickle, possibly nested
    under state_dict/model/state_dict_ema; module./backbone. prefixes stripped) to start from; it wins
    over pretrained, and nothing is downloaded."""
    proj_dim: int = 512
    """Backbone features are projected to this width before the GRU."""
    gru_hidden: int = 512
    """Hidden size of each GRU direction."""
    gru_layers: int = 2
    """Stacked bidirectional GRU layers."""
    gru_dropout: float = 0.3
    """Dropout between GRU layers."""
    attention: str = "tanh"
    """Attention-MIL pooling: tanh (the seed's) or gated."""
    attn_dim: int = 256
    """Hidden width of the attention MLP."""
    level_emb_dim: int = 256
    """Width of the level embedding (and the side embedding on two-sided views)."""
    head_dropout: float = 0.35
    """Dropout in the classifier head."""
    aux_heads: bool = False
    """Add the v4 auxiliary heads (normal vs abnormal; moderate vs severe on abnormal rows)."""

    def __post_init__(self):
        _check(bool(self.backbone), "backbone", "must not be empty")
        _check(self.attention in ATTENTIONS, "attention", f"must be one of {ATTENTIONS}, got {self.attention!r}")
        for k in ("proj_dim", "gru_hidden", "gru_layers", "attn_dim", "level_emb_dim"):
            _check(getattr(self, k) >= 1, k, f"must be >= 1, got {getattr(self, k)}")
        for k in ("gru_dropout", "head_dropout"):
            _check(0 <= getattr(self, k) < 1, k, f"must be in [0, 1), got {getattr(self, k)}")


SELECT_METRICS = ("balanced_accuracy", "score", "val_loss")


@dataclass
class TrainConfig:
    """The training recipe (the reference notebooks' v9: README "Training") and cross-validation."""

    epochs: int = 25
    """Training epochs."""
    batch_size: int = 12
    """Samples per step (per rank under DDP)."""
    lr: float = 1e-4
    """Peak learning rate of everything but the backbone."""
    backbone_lr: float = 1e-5
    """Peak learning rate of the backbone."""
    weight_decay: float = 0.03
    """AdamW weight decay of backbone, GRU and attention."""
    head_weight_decay: float = 0.01
    """AdamW weight decay of the classifier head."""
    warmup_epochs: float = 2.0
    """Linear warm-up length in epochs, then cosine decay to zero."""
    class_weights: tuple = (1.0, 2.0, 4.0)
    """Cross-entropy weights of Normal/Mild, Moderate, Severe. [1, 2, 4] are the metric's row weights,
    so the weighted CE's optimum is the submission the metric rewards (p_k proportional to w_k * P(k));
    the top RSNA 2024 solutions trained with them, and on the synthetic yardstick they beat the seed
    notebooks' [1, 4, 6] (skill 0.454 vs 0.430, benchmarks/RESULTS.md)."""
    any_severe_weight: float = 0.0
    """Weight of the any-severe term (binary loss on the max severe probability), 0 = off."""
    aux_weight: float = 0.1
    """Loss weight of the auxiliary heads when model.aux_heads is on."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    amp: bool = True
    """Mixed precision (bf16) on GPU; ignored on CPU."""
    compile: bool = False
    """torch.compile the model."""
    channels_last: bool = True
    """channels-last memory format for the backbone."""
    patience: int = 12
    """Early stopping patience in epochs (0 = off)."""
    select_metric: str = "balanced_accuracy"
    """Metric that picks the best epoch: balanced_accuracy (higher), score or val_loss (lower)."""
    min_recall: float = 0.2
    """Dead-class alarm: an epoch with any class recall below this is never kept as best."""
    folds: int = 5
    """StratifiedGroupKFold folds (grouped by study)."""
    seed: int = 42
    """Seed of folds, initialisation, loader order and augmentation."""
    device: str = "auto"
    """auto (cuda when available), cuda or cpu."""
    max_steps_per_epoch: int = 0
    """Cap on training steps per epoch (0 = the whole epoch); for smoke runs."""
    epochs_per_run: int = 0
    """Stop this invocation after this many epochs (0 = run to ``epochs``); ``--resume`` continues the
    same schedule (for time-limited jobs)."""

    def __post_init__(self):
        self.class_weights = tuple(float(w) for w in self.class_weights)
        _check(len(self.class_weights) == 3 and all(w > 0 for w in self.class_weights), "class_weights",
               f"must be 3 positive numbers, got {list(self.class_weights)}")
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.lr > 0 and self.backbone_lr >= 0, "lr", "lr must be > 0 and backbone_lr >= 0")
        _check(self.folds >= 2, "folds", f"must be >= 2, got {self.folds}")
        _check(self.select_metric in SELECT_METRICS, "select_metric",
               f"must be one of {SELECT_METRICS}, got {self.select_metric!r}")
        _check(self.device in ("auto", "cuda", "cpu"), "device", f"must be auto, cuda or cpu, got {self.device!r}")
        _check(self.max_steps_per_epoch >= 0, "max_steps_per_epoch", "must be >= 0")
        _check(self.epochs_per_run >= 0, "epochs_per_run", f"must be >= 0, got {self.epochs_per_run}")


@dataclass
class LocalizerConfig:
    """The level localiser (``lsdc train-localizer``): a 2D U-Net over the store's sagittal volumes
    (slices as input channels) with one heatmap per keypoint over (slice, row, col). Field names carry a
    ``loc_`` prefix so ``--key=value`` stays unambiguous beside the classifier's training keys."""

    loc_width: int = 16
    """Channels of the first U-Net stage (doubled per stage, capped at 4x)."""
    loc_stride: int = 4
    """Output stride of the heatmaps in volume pixels (2 or 4; sub-cell precision comes from the decoder)."""
    loc_epochs: int = 40
    """Training epochs over the training folds' series."""
    loc_batch_size: int = 8
    """Series (volumes) per step."""
    loc_lr: float = 2e-3
    """Peak AdamW learning rate (linear warm-up over the first epoch, then cosine to zero)."""
    loc_weight_decay: float = 1e-4
    """AdamW weight decay."""
    loc_sigma_mm: float = 4.0
    """Standard deviation of the Gaussian target around each keypoint, in mm along every axis."""
    loc_folds: int = 5
    """GroupKFold folds over studies; one of them is held out for the reported metrics."""
    loc_holdout_fold: int = 0
    """The held-out fold (metrics on it, model trained on the others); -1 trains on every study."""
    loc_cross_view: bool = False
    """Also train each volume on the other sagittal view's keypoints of its study (projected through
    patient coordinates) and, at prediction, place each keypoint at the mean of its estimates from
    the study's Sagittal T1 and T2 series."""
    loc_augment: bool = True
    """Random 3D affine (in-plane rotation/scale/shift, slice shift/scale), left-right mirror with
    the foramen channels swapped, intensity jitter."""
    loc_ensemble: int = 3
    """Models trained (different seeds) and averaged, log-probabilities summed, at prediction."""
    loc_seed: int = 0
    """Seed of the folds, initialisation and augmentation."""
    loc_device: str = "auto"
    """auto (cuda when available), cuda or cpu."""

    def __post_init__(self):
        _check(self.loc_width >= 4, "loc_width", f"must be >= 4, got {self.loc_width}")
        _check(self.loc_stride in (2, 4), "loc_stride", f"must be 2 or 4, got {self.loc_stride}")
        for k in ("loc_epochs", "loc_batch_size", "loc_ensemble"):
            _check(getattr(self, k) >= 1, k, f"must be >= 1, got {getattr(self, k)}")
        _check(self.loc_lr > 0, "loc_lr", f"must be > 0, got {self.loc_lr}")
        _check(self.loc_weight_decay >= 0, "loc_weight_decay", f"must be >= 0, got {self.loc_weight_decay}")
        _check(self.loc_sigma_mm > 0, "loc_sigma_mm", f"must be > 0, got {self.loc_sigma_mm}")
        _check(self.loc_folds >= 2, "loc_folds", f"must be >= 2, got {self.loc_folds}")
        _check(-1 <= self.loc_holdout_fold < self.loc_folds, "loc_holdout_fold",
               f"must be -1 or in [0, loc_folds), got {self.loc_holdout_fold}")
        _check(self.loc_device in ("auto", "cuda", "cpu"), "loc_device",
               f"must be auto, cuda or cpu, got {self.loc_device!r}")


@dataclass
class PredictConfig:
    """``lsdc predict``: test-time choices."""

    tta: bool = True
    """Average each classifier over slice-window shifts of -1, 0, +1 (never an image flip)."""
    calibrate: bool = True
    """Apply each run's calibration (RUN_DIR/calibration.json, fitted on its out-of-fold rows when
    missing): a temperature that a small or lucky fold cannot sharpen, the any-severe scale on each
    study's highest spinal severe probability, and a small mix with the prior (lsdc.inference.calibrate)."""


@dataclass
class Config:
    """Everything a run needs; saved as config.yaml in every output directory."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    """DICOM -> Zarr conversion and the crop spec of each view."""
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    """Store -> batches, augmentation."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The classifier."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training recipe."""
    localizer: LocalizerConfig = field(default_factory=LocalizerConfig)
    """The level localiser (sagittal keypoints)."""
    predict: PredictConfig = field(default_factory=PredictConfig)
    """Test-time choices of ``lsdc predict``."""

    def __post_init__(self):
        for v in VIEWS:
            spec = self.preprocess.spec(v)
            _check(self.loader.max_slice_shift <= spec.slice_margin, "max_slice_shift",
                   f"{self.loader.max_slice_shift} exceeds preprocess.{v}.slice_margin={spec.slice_margin}")

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def save(self, out_dir) -> Path:
        """Write the resolved config into ``out_dir/config.yaml``."""
        path = Path(out_dir) / CONFIG_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def _to_plain(obj):
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj
