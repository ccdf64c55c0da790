"""Train the level localiser on a store's sagittal volumes; report held-out accuracy; save it.

``train_localizer(store, out_dir, cfg)``: studies are split by GroupKFold (``loc_folds``, seeded); the
model trains on every fold but ``loc_holdout_fold`` and is measured on that one (``-1``: trains on all,
no metrics). The subarticular offsets (project.py) are learned from the same training studies and
measured on the held-out ones twice: from the labelled canal point and from the predicted one.

OUT_DIR/localizer.pt     weights + meta (localize.py)       OUT_DIR/config.yaml  the resolved config
OUT_DIR/localizer.json   metrics: median_error_mm, slice_exact, slice_within_1, ..., per view, per
                         level, per keypoint, the axial projection's accuracy, train seconds
OUT_DIR/heldout_keypoints.csv  every held-out keypoint: predicted vs labelled slice, errors in mm
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..core.config import Config
from ..core.errors import InputError
from ..core.progress import progress_bar
from ..core.schema import AX_T2, CONDITION_VIEW, LEVELS, SAG_T1, SAG_T2, SPINAL
from ..store.reader import read_index, store_preprocess_config
from ..train.device import resolve_device
from ..train.epoch import LOG_EVERY, read_back
from ..train.schedule import lr_lambda
from . import project
from .data import KEYPOINTS, MIRROR, LocSet, load_locset
from .localize import METRICS_FILE, Localizer, localize_items, save_localizer
from .model import create_localizer, grid_coords, heatmap_loss

HELDOUT_FILE = "heldout_keypoints.csv"


def study_folds(study_ids: np.ndarray, n_folds: int, seed: int) -> dict:
    """{study_id: fold}: studies shuffled by ``seed`` and dealt round-robin (GroupKFold by study)."""
    studies = np.unique(study_ids)
    if len(studies) < n_folds:
        raise InputError(f"{len(studies)} studies cannot make {n_folds} localiser folds (localizer.loc_folds)")
    perm = np.random.default_rng(seed).permutation(studies)
    return {int(s): k % n_folds for k, s in enumerate(perm)}


# -- augmentation: one random affine per volume, applied to image and targets alike -----------------
def augment(vols: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """vols float (B, S, P, P) in [0, 1], targets (B, K, 3) volume (k, r, c) -> augmented copies.

    In-plane: rotation +-10 deg, scale 0.9-1.1, shift +-8 % about the centre (one 2D warp with the
    slices as channels); slice axis: scale 0.9-1.1 and shift +-1.5 slices (linear between slices);
    a left-right mirror (slice axis reversed, left/right foramina swapped) half the time; gamma,
    contrast and noise. Targets follow every geometric step.
    """
    B, S, P, _ = vols.shape
    f = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    # slice axis: destination k samples source a*(k - kc) + kc + t
    a, tk, kc = rng.uniform(0.9, 1.1, B), rng.uniform(-1.5, 1.5, B), (S - 1) / 2
    src = np.clip(a[:, None] * (np.arange(S)[None] - kc) + kc + tk[:, None], 0, S - 1)
    i0 = np.minimum(np.floor(src).astype(np.int64), S - 2)
    frac = f(src - i0)[:, :, None, None]
    idx = torch.from_numpy(i0)[:, :, None, None].expand(B, S, P, P)
    x = vols.gather(1, idx) * (1 - frac) + vols.gather(1, idx + 1) * frac
    # in-plane: source (c, r) = A (dest - centre) + centre + t, as affine_grid's normalised theta
    rot, scale = np.radians(rng.uniform(-10, 10, B)), rng.uniform(0.9, 1.1, B)
    shift = rng.uniform(-0.08, 0.08, (B, 2)) * P
    A = np.stack([np.stack([np.cos(rot), -np.sin(rot)], 1), np.stack([np.sin(rot), np.cos(rot)], 1)], 1) / scale[:, None, None]
    theta = np.concatenate([A, (2 * shift / P)[:, :, None]], axis=2)  # centre-relative: same in (-1, 1) units
    grid = F.affine_grid(f(theta), [B, S, P, P], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    cen = (P - 1) / 2
    cr = targets[..., [2, 1]] - cen - f(shift)[:, None, :]  # (B, K, 2) source (c, r) about the centre
    cr = torch.einsum("bij,bkj->bki", f(np.linalg.inv(A)), cr) + cen
    k = (targets[..., 0] - kc - f(tk)[:, None]) / f(a)[:, None] + kc
    t = torch.stack([k, cr[..., 1], cr[..., 0]], -1)
    mirror = torch.from_numpy(rng.random(B) < 0.5)
    if mirror.any():  # a left-right mirror: slice axis reversed, left and right foramina swap names
        x[mirror] = x[mirror].flip(1)
        tm = t[mirror][:, list(MIRROR)]
        tm[..., 0] = S - 1 - tm[..., 0]
        t[mirror] = tm
    x = x.clamp(0, 1).pow(f(np.exp(rng.uniform(-0.3, 0.3, B))).view(B, 1, 1, 1))
    x = x * f(rng.uniform(0.8, 1.2, B)).view(B, 1, 1, 1)
    x = x + torch.randn_like(x) * f(rng.uniform(0, 0.03, B)).view(B, 1, 1, 1)
    return x, t


def _sigmas(data: LocSet, items: np.ndarray, sigma_mm: float, stride: int) -> torch.Tensor:
    mm = np.array([data.geoms[i].voxel_mm() for i in items])  # (B, 3) mm per volume step (k, r, c)
    mm[:, 1:] *= stride
    return torch.from_numpy(sigma_mm / mm).float()


# -- metrics --------------------------------------------------------------------------------------
def keypoint_errors(pred: pd.DataFrame, labels: pd.DataFrame, geoms: list) -> pd.DataFrame:
    """One row per labelled keypoint of the predicted series: slice error and mm errors.

    error_mm: 3D distance from the predicted point (on its nearest real slice) to the labelled point;
    inplane_mm: the same with the predicted (x, y) put on the labelled slice.
    """
    by_key = {(int(r.series_id), r.condition, r.level): r for r in pred.itertuples(index=False)}
    item_of = {(g.study_id, g.series_id): i for i, g in enumerate(geoms)}
    rows = []
    for r in labels.itertuples(index=False):
        condition, level = KEYPOINTS[r.keypoint]
        p = by_key.get((int(r.series_id), condition, level))
        if p is None:
            continue
        g = geoms[item_of[(int(r.study_id), int(r.series_id))]]
        truth = np.array([r.x_mm, r.y_mm, r.z_mm])
        at_pred = g.to_patient(p.slice_index, p.x, p.y)
        at_label = g.to_patient(r.slice_index, p.x, p.y)
        rows.append({"study_id": r.study_id, "series_id": r.series_id, "view": CONDITION_VIEW[condition],
                     "condition": condition, "level": level, "slice_index": r.slice_index,
                     "slice_frac": float(p.slice_frac), "slice_error": int(p.slice_index - r.slice_index),
                     "error_mm": float(np.linalg.norm(at_pred - truth)),
                     "inplane_mm": float(np.linalg.norm(at_label - truth))})
    return pd.DataFrame(rows)


def summarise(err: pd.DataFrame) -> dict:
    if not len(err):
        return {"n": 0}
    e = err["error_mm"].to_numpy()
    s = err["slice_error"].abs().to_numpy()
    return {"n": int(len(err)), "median_error_mm": float(np.median(e)), "mean_error_mm": float(e.mean()),
            "p90_error_mm": float(np.percentile(e, 90)), "within_5mm": float((e <= 5).mean()),
            "median_inplane_mm": float(err["inplane_mm"].median()),
            "slice_exact": float((s == 0).mean()), "slice_within_1": float((s <= 1).mean())}


def localizer_metrics(err: pd.DataFrame) -> dict:
    out = summarise(err)
    out["per_view"] = {v: summarise(err[err["view"] == v]) for v in (SAG_T2, SAG_T1)}
    out["per_level"] = {lv: summarise(err[err["level"] == lv]) for lv in LEVELS}
    out["per_keypoint"] = {f"{c}/{lv}": summarise(err[(err["condition"] == c) & (err["level"] == lv)])
                           for c, lv in KEYPOINTS}
    return out


def axial_metrics(store, offsets: dict, canal_points: dict, foramina: dict, studies) -> dict:
    """Subarticular points from ``canal_points`` ({study: {level: mm}}) + offsets against the labelled
    axial points of ``studies``: 3D distance and the superior-inferior (z) distance, in mm (the
    axial slice choice depends on the latter; slices are ~3-5 mm apart)."""
    axial = read_index(store, AX_T2)
    axial = axial[axial["study_id"].isin(list(studies))]
    errs, slices = [], []
    for study_id, rows in axial.groupby("study_id"):
        pred = project.subarticular_points(canal_points.get(int(study_id), {}), offsets,
                                           foramina.get(int(study_id)))
        for r in rows.itertuples(index=False):
            p = pred[r.side].get(r.level)
            if p is None:
                continue
            truth = np.array([r.x_mm, r.y_mm, r.z_mm])
            errs.append(float(np.linalg.norm(p - truth)))
            slices.append(float(abs(p[2] - truth[2])))
    if not errs:
        return {"n": 0}
    errs, slices = np.array(errs), np.array(slices)
    return {"n": int(len(errs)), "median_error_mm": float(np.median(errs)), "mean_error_mm": float(errs.mean()),
            "median_z_error_mm": float(np.median(slices))}


# -- training -------------------------------------------------------------------------------------
def fit(data: LocSet, items: np.ndarray, cfg: Config, device: torch.device, progress: bool = True,
        seed: int = 0) -> torch.nn.Module:
    """Train a fresh LocNet on ``items`` of ``data``; returns it in eval mode."""
    lc = cfg.localizer
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    S = data.volumes.shape[1]
    model = create_localizer(S, len(KEYPOINTS), lc.loc_width, lc.loc_stride).to(device)
    model = model.to(memory_format=torch.channels_last)  # oneDNN's fast layout (~1.8x on CPU)
    opt = torch.optim.AdamW(model.parameters(), lr=lc.loc_lr, weight_decay=lc.loc_weight_decay)
    steps_per_epoch = math.ceil(len(items) / lc.loc_batch_size)
    total = lc.loc_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps_per_epoch, total))
    bar = progress_bar(total=total, desc="localiser", unit="step", disable=not progress)
    pending = []  # detached step losses not yet read back
    model.train()
    for epoch in range(lc.loc_epochs):
        order = rng.permutation(items)
        for b in range(steps_per_epoch):
            batch = order[b * lc.loc_batch_size:(b + 1) * lc.loc_batch_size]
            x = torch.from_numpy(data.volumes[batch]).float().div_(255)
            t = torch.from_numpy(data.targets[batch])
            if lc.loc_augment:
                x, t = augment(x, t, rng)
            x, t = x.to(device).contiguous(memory_format=torch.channels_last), t.to(device)
            loss = heatmap_loss(model(x), grid_coords(t, lc.loc_stride),
                                _sigmas(data, batch, lc.loc_sigma_mm, lc.loc_stride).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            pending.append(loss.detach())
            if len(pending) >= LOG_EVERY:  # one host-device sync per LOG_EVERY steps, not per step
                bar.set_postfix(epoch=epoch, loss=f"{read_back(pending)[-1]:.3f}")
            bar.update()
    bar.close()
    return model.eval()


def slice_bias(loc: Localizer, data: LocSet, items: np.ndarray, fused: bool) -> list:
    """Per keypoint, the mean of (decoded continuous slice - labelled slice) over the training series,
    in real slices (0 where a keypoint has no label). The labels are the slices nearest the landmark,
    so the mean rounding error is ~0 and what remains is the decoder's systematic offset."""
    pred = localize_items(loc, [data.geoms[i] for i in items], data.volumes[items], fused=fused)
    err = keypoint_errors(pred, data.labels[data.labels["item"].isin(items)], data.geoms)
    bias = [0.0] * len(KEYPOINTS)
    if len(err):
        res = (err["slice_frac"] - err["slice_index"]).groupby([err["condition"], err["level"]]).mean()
        for (c, lv), v in res.items():
            bias[KEYPOINTS.index((c, lv))] = round(float(np.clip(v, -0.5, 0.5)), 4)  # a small correction only
    return bias


def train_localizer(store, out_dir, cfg: Config | None = None, progress: bool = True) -> dict:
    """Train, measure on the held-out fold, save OUT_DIR/localizer.pt + localizer.json; returns the metrics."""
    cfg = cfg or Config()
    pcfg = store_preprocess_config(store)
    cfg = dataclasses.replace(cfg, preprocess=pcfg)  # the store defines the volumes
    lc = cfg.localizer
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(out_dir)
    t0 = time.perf_counter()
    data = load_locset(store, cross_view=lc.loc_cross_view)
    labelled = np.flatnonzero(~np.isnan(data.targets).all(axis=(1, 2)))
    if not len(labelled):
        raise InputError(f"{store}: no labelled sagittal keypoints to train the localiser on (a train-split store?)")
    fold_of = study_folds(data.study_ids[labelled], lc.loc_folds, lc.loc_seed)
    item_fold = np.array([fold_of.get(int(s), -2) for s in data.study_ids])
    hold = lc.loc_holdout_fold
    train_items = labelled[item_fold[labelled] != hold]
    val_items = labelled[item_fold[labelled] == hold] if hold >= 0 else np.zeros(0, np.int64)
    device = torch.device(resolve_device(lc.loc_device, "localizer.loc_device"))
    print(f"localiser: {len(train_items)} train / {len(val_items)} held-out series "
          f"({data.volumes.shape[1]} x {data.volumes.shape[2]} px volumes), {lc.loc_epochs} epochs on {device}",
          flush=True)
    models = [fit(data, train_items, cfg, device, progress, seed=lc.loc_seed + 1000 * m) for m in range(lc.loc_ensemble)]
    train_s = time.perf_counter() - t0

    train_studies = {s for s, k in fold_of.items() if k != hold}
    idx = {v: read_index(store, v) for v in (SAG_T2, SAG_T1, AX_T2)}
    offsets = project.learn_offsets(idx[SAG_T2], idx[SAG_T1], idx[AX_T2], train_studies)
    meta = {"in_slices": int(data.volumes.shape[1]), "volume_px": int(data.volumes.shape[2]), "width": lc.loc_width,
            "stride": lc.loc_stride, "keypoints": [list(k) for k in KEYPOINTS], "cross_view": lc.loc_cross_view,
            "preprocess": dataclasses.asdict(pcfg), "offsets": offsets}
    meta["slice_bias"] = slice_bias(Localizer(models, meta, "cpu"), data, train_items, lc.loc_cross_view)
    save_localizer(out_dir, [m.cpu() for m in models], meta, cfg.to_dict())

    metrics = {"train_series": int(len(train_items)), "heldout_series": int(len(val_items)),
               "train_seconds": round(train_s, 1), "device": str(device), "epochs": lc.loc_epochs,
               "ensemble": lc.loc_ensemble,
               "volume_slices": int(data.volumes.shape[1]), "volume_px": int(data.volumes.shape[2])}
    if len(val_items):
        loc = Localizer(models, meta, "cpu")
        geoms, labels = [data.geoms[i] for i in val_items], data.labels[data.labels["item"].isin(val_items)]
        pred = localize_items(loc, geoms, data.volumes[val_items], fused=lc.loc_cross_view)
        err = keypoint_errors(pred, labels, data.geoms)
        metrics.update(localizer_metrics(err))
        if lc.loc_cross_view:  # what fusing the two views adds
            own = keypoint_errors(localize_items(loc, geoms, data.volumes[val_items], fused=False), labels, data.geoms)
            metrics["own_view_only"] = {**summarise(own), "per_view": {v: summarise(own[own["view"] == v])
                                                                        for v in (SAG_T2, SAG_T1)}}
        err.to_csv(out_dir / HELDOUT_FILE, index=False)
        held = {s for s, k in fold_of.items() if k == hold}
        truth = project.labelled_points(idx[SAG_T2], SPINAL)
        predicted = {int(s): {r.level: np.array([r.x_mm, r.y_mm, r.z_mm]) for r in g.itertuples(index=False)}
                     for s, g in pred[pred["view"] == SAG_T2].groupby("study_id")}
        metrics["axial_from_true_canal"] = axial_metrics(store, offsets, truth, {}, held)
        metrics["axial_from_predicted_canal"] = axial_metrics(store, offsets, predicted, {}, held)
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=1))
    return metrics
