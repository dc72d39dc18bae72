"""The conversion report: JSON for tools, Markdown for people, a PNG plot per image.

:func:`write_report` takes the report as one JSON-ready dict, built by
:mod:`edge.convert.build`::

    {"bundle", "target", "platform", "passed", "created", "weights", "head", "precision",
     "calibration", "thresholds", "tools", "timings_s",
     "models": {"detector": {"chosen": "int8" | "hybrid" | null,
                             "attempts": [{"mode", "passed", "failures", "figures",
                                           "quantization", "worst_layers", "timings_s"}]},
                "attributes": {...}}}

and writes ``report.json``, ``report.md`` and ``report.png`` (per held-out image, the
mean IoU of the matched boxes and their mean score drift, for each detector attempt).
``precision`` is the float precision the models were gated at where the toolchain
chooses one (OpenVINO), else null. ``timings_s`` holds seconds per model (export,
quantization, gate) and ``total`` up to the verdict (the bundle is written after).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JSON, MARKDOWN, PLOT = "report.json", "report.md", "report.png"
WORST_LAYERS_SHOWN = 10


def write_report(folder: Path, report: dict[str, Any]) -> list[Path]:
    """Write the report's three files into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JSON).write_text(json.dumps(report, indent=1) + "\n")
    (folder / MARKDOWN).write_text(markdown(report))
    plot(report, folder / PLOT)
    return [folder / name for name in (JSON, MARKDOWN, PLOT)]


def summary(report: dict[str, Any]) -> list[str]:
    """Return one line per model: the chosen attempt's figures, for the console."""
    lines = []
    for task, model in report["models"].items():
        attempt = next((a for a in model["attempts"] if a["passed"]), model["attempts"][-1])
        f = attempt["figures"]
        if task == "detector":
            figures = (f"matched {f['matched']}/{f['boxes']} FP32 boxes, mean IoU {_num(f['mean_iou'])}, "
                       f"score drift {_num(f['score_drift_mean_abs'])} mean / "
                       f"{_num(f['score_drift_max_abs'])} max, mAP50 {_num(f['map50'])}")
        else:
            figures = (f"top-1 agreement {_num(f['top1_mean'])} on {f['crops']} crops, "
                       f"worst logit cosine {_num(f['cosine_worst'], 5)}")
            if f.get("labelled"):
                figures += _labelled_summary(f["labelled"])
        lines.append(f"{task} ({attempt['mode']}): {figures}: {_verdict(attempt)}")
    if report.get("precision"):
        lines.append(_precision_line(report["precision"]))
    return lines


def _precision_line(precision: str) -> str:
    return (f"Gated at {precision} inference precision: the manifest records it, and the device "
            f"runs the models at it.")


def markdown(report: dict[str, Any]) -> str:
    """Render the report as Markdown."""
    verdict = "passed" if report["passed"] else "FAILED"
    lines = [
        f"# Conversion report: {report['bundle']} / {report['target']}: {verdict}",
        "",
        f"Target platform `{report['platform']}`, built {report['created']} from "
        f"`{report['weights']['file']}` (sha256 `{report['weights']['sha256'][:12]}`), calibration set "
        f"`{report['calibration']['name']}` (sha256 `{report['calibration']['sha256'][:12]}`).",
        "",
    ]
    if report.get("precision"):
        lines += [_precision_line(report["precision"]), ""]
    models = report["models"]
    if "detector" in models:
        lines += _detector_section(models["detector"], report["thresholds"])
    if "attributes" in models:
        lines += _attribute_section(models["attributes"], report["thresholds"])
    lines += ["## Settings", "", "| | |", "|---|---|"]
    lines += [f"| threshold `{k}` | {v} |" for k, v in report["thresholds"].items()]
    lines += [f"| calibration images `{k}` | {v} |" for k, v in report["calibration"]["images"].items()]
    lines += [f"| `{k}` | {v} |" for k, v in report["tools"].items()]
    lines += [f"| time `{k}` | {v} s |" for k, v in report["timings_s"].items()]
    return "\n".join(lines) + "\n"


def _detector_section(model: dict[str, Any], thresholds: dict[str, Any]) -> list[str]:
    lines = [
        "## Detector",
        "",
        f"FP32 boxes at the confidence threshold against INT8 boxes down to "
        f"{thresholds['score_margin']} below it; pairs need IoU >= {thresholds['match_iou']}.",
        "",
        "| attempt | images | matched | mean IoU | min IoU | score drift mean abs / max abs "
        "| mAP50 vs FP32 | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attempt in model["attempts"]:
        f = attempt["figures"]
        lines.append(
            f"| {attempt['mode']} | {f['images']} | {f['matched']}/{f['boxes']} | {_num(f['mean_iou'])} "
            f"| {_num(f['min_iou'])} | {_num(f['score_drift_mean_abs'])} / {_num(f['score_drift_max_abs'])} "
            f"| {_num(f['map50'])} | {_verdict(attempt)} |"
        )
    return lines + [""] + _worst_layers(model) + ["![IoU and score drift per image](report.png)", ""]


def _attribute_section(model: dict[str, Any], thresholds: dict[str, Any]) -> list[str]:
    lines = [
        "## Attributes",
        "",
        "| attempt | crops | mean top-1 agreement | worst attribute's mean logit cosine | verdict |",
        "|---|---|---|---|---|",
    ]
    for attempt in model["attempts"]:
        f = attempt["figures"]
        lines.append(f"| {attempt['mode']} | {f['crops']} | {_num(f['top1_mean'])} "
                     f"| {_num(f['cosine_worst'], 5)} | {_verdict(attempt)} |")
    last = model["attempts"][-1]
    lines += ["", f"Per attribute ({last['mode']}):", "",
              "| attribute | top-1 agreement | logit cosine mean | min | held |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {_num(f['top1'])} | {_num(f['cosine_mean'], 5)} | {_num(f['cosine_min'], 5)} "
              f"| {'yes' if f.get('held', True) else 'no: not learnt'} |"
              for name, f in last["figures"]["per_attribute"].items()]
    labelled = last["figures"].get("labelled")
    if labelled:
        lines += ["", f"Against the labels ({last['mode']}){_labelled_summary(labelled)}:", "",
                  "| attribute | crops known | FP32 mA | INT8 mA | drop |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {f['known']} | {_num(f['fp32_mA'])} | {_num(f['int8_mA'])} "
                  f"| {_num(f['drop'])} |" for name, f in labelled["per_attribute"].items()]
    return lines + [""] + _worst_layers(model)


def _labelled_summary(labelled: dict[str, Any]) -> str:
    return (f"; on {labelled['dataset']}'s {labelled['split']} split ({labelled['crops']} crops) "
            f"mA FP32 {_num(labelled['fp32_mA'])}, INT8 {_num(labelled['int8_mA'])}, "
            f"drop {_num(labelled['mA_drop'])}")


def _worst_layers(model: dict[str, Any]) -> list[str]:
    """List the layers that drift most in the last attempt."""
    last = model["attempts"][-1]
    rows = last.get("worst_layers") or []
    if not rows:
        return []
    lines = [f"Layers that drift most ({last['mode']}; cosine of FP32 and INT8 outputs, error "
             "accumulated up to the layer):", "", "| layer | op | cosine |", "|---|---|---|"]
    lines += [f"| `{r['layer']}` | {r['op']} | {r['cos']:.5f} |" for r in rows[:WORST_LAYERS_SHOWN]]
    return lines + [""]


def _verdict(attempt: dict[str, Any]) -> str:
    return "pass" if attempt["passed"] else "fail: " + "; ".join(attempt["failures"])


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def plot(report: dict[str, Any], path: Path) -> None:
    """Plot the mean IoU and mean score drift per held-out image for each detector attempt."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a build host
    import matplotlib.pyplot as plt

    fig, (iou_ax, drift_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    attempts = report["models"].get("detector", {}).get("attempts", [])
    for attempt in attempts:
        per_image = attempt["figures"]["per_image"]
        x = range(len(per_image))
        iou_ax.plot(x, [_nan(p["mean_iou"]) for p in per_image], "o-", label=attempt["mode"])
        drift_ax.plot(x, [_nan(p["mean_abs_drift"]) for p in per_image], "o-", label=attempt["mode"])
    iou_ax.axhline(report["thresholds"]["min_mean_iou"], color="red", lw=1, ls="--", label="gate")
    iou_ax.set_ylabel("mean IoU of matched boxes")
    drift_ax.set_ylabel("mean |score drift|")
    drift_ax.set_xlabel("held-out image")
    iou_ax.set_title(f"{report['bundle']} / {report['target']}: INT8 against FP32")
    iou_ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
