"""The scalars of a record, named as the ``wandb`` and ``tensorboard`` loggers show them."""

from __future__ import annotations

#: the cost axis every curve is drawn against: cumulative work units
STEP = "work_units"


def flatten(prefix: str, data: dict, out: dict) -> dict:
    """The numbers of a nested dict into ``out`` as ``prefix/key/subkey`` (booleans and text left out)."""
    for k, v in data.items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict):
            flatten(key, v, out)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def scalars(r: dict) -> dict | None:
    """The numbers of a training, evaluation or re-allocation record: ``work_units``, ``cost/seconds``
    and ``cost/flops`` on every row, then ``train/…`` (per mesh ``train/mesh<side>/…``), ``<split>/…``
    or ``allocation/…``; None for other events. Missing values are left out."""
    row = {STEP: r["work_units"], "cost/seconds": r.get("seconds"), "cost/flops": r.get("flops")}
    if r["event"] == "train":
        row.update({"train/loss": r["loss"], "train/lr": r["lr"], "train/stage": r["stage"],
                    "train/resolution": r["stage_resolution"], "cost/step_seconds": r["step_seconds"]})
        for lv in r["levels"]:
            side = f"train/mesh{lv['resolution']}"
            for key in ("fine_loss", "coarse_loss", "value", "correction_var", "batch", "work_share", "seconds", "flops"):
                if key in lv:
                    row[f"{side}/{key}"] = lv[key]
        flatten("cost/mesh", dict(r.get("meshes", {})), row)
    elif r["event"] == "eval":
        row.update({f"{r['split']}/{k}": r[k] for k in ("psnr", "ssim", "input_psnr", "input_ssim") if k in r})
    elif r["event"] == "allocation":
        for t, (batch, var, cost) in enumerate(zip(r["batches"], r["variances"], r["costs"])):
            row.update({f"allocation/term{t}/batch": batch, f"allocation/term{t}/variance": var,
                        f"allocation/term{t}/cost": cost})
        row["allocation/stage"] = r["stage"]
        row["allocation/work_per_iteration"] = r["work_per_iteration"]
    else:
        return None
    return {k: v for k, v in row.items() if v is not None}
