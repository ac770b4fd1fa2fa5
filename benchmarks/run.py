"""`make bench`: every benchmark figure, with its goal, in one table and in
`benchmarks/results.json`.

    .venv/bin/python -m benchmarks.run [--quick] [--only pipeline,startup,...]

`--quick` shrinks every workload (for a smoke run; its figures are not the recorded ones).
`--only` runs the named parts and updates only their figures in `benchmarks/results.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import (
    budget_use,
    budget_value,
    bundle_size,
    cli_startup,
    decrypt,
    fanout,
    fanout_top_k,
    fit_at_scale,
    herbarium,
    optimizations,
    pipeline,
    startup,
    wide_blend,
    wide_search,
)
from benchmarks.common import machine

RESULTS = Path(__file__).resolve().parent / "results.json"


def _pipeline(quick: bool) -> dict:
    images, repeats = (32, 1) if quick else (128, 3)
    # Compute-bound (ResNet-18, se_resnext50_32x4d) and decode-bound (MobileNetV3-small)
    # ensembles of models x 2 TTA views, at CPU-sized inputs.
    flow = pipeline.measure(images, 4, repeats)
    heavy = pipeline.measure(images // 2, 2, repeats, "se_resnext50_32x4d", 128,
                             ("kernelpack", "forward"))
    light = pipeline.measure(images, 4, repeats, "torchvision.mobilenet_v3_small", 128)
    return {
        "speedup_vs_eager_forward": {"value": flow["speedup_vs_forward"], "goal": ">= 1.3",
                                     "detail": flow},
        "speedup_vs_eager_forward_se_resnext50": {"value": heavy["speedup_vs_forward"],
                                                  "goal": ">= 1.3", "detail": heavy},
        "speedup_vs_peer_baseline": {"value": flow["speedup_vs_baseline"], "goal": ">= 1.5",
                                     "peak_rss_growth_mb": flow["rss_growth_mb"]},
        "efficiency_vs_forward_plus_decode_light_models": {
            "value": light["efficiency_vs_forward_plus_decode"], "goal": "<= 1.0",
            "detail": light},
        "speedup_vs_peer_baseline_light_models": {"value": light["speedup_vs_baseline"],
                                                  "goal": ">= 1.5",
                                                  "peak_rss_growth_mb": light["rss_growth_mb"]},
    }


def _optimizations(quick: bool) -> dict:
    # Each model alone: eager fp32 against BatchNorm folding + channels-last (the runtime's
    # steps); MobileNetV3-small only has to be no slower.
    figures = {}
    for row in optimizations.measure(repeats=2 if quick else 5):
        name = row["arch"].split(".")[-1]
        figures[f"optimised_forward_speedup_{name}"] = {
            "value": row["speedup"]["fold_channels_last"],
            "goal": ">= 1.0" if "mobilenet" in name else ">= 1.3", "detail": row}
    return figures


def _wide_blend(quick: bool) -> dict:
    blend = wide_blend.measure(images=2_000 if quick else 20_000)
    return {"wide_blend_peak_rss_gb": {"value": blend["peak_rss_gb"], "goal": "<= 1.5",
                                       "detail": blend}}


def _wide_search(quick: bool) -> dict:
    # Herbarium-wide OOF as top-k .npz (100k rows x 32,093 classes x 5 models, k = 50): blend
    # search with macro_f1 and top-1 accuracy, memory rows x k, never rows x classes.
    wide = wide_search.measure(rows=10_000 if quick else wide_search.ROWS)
    macro = wide["blend"]["macro_f1"]
    return {"blend_search_herbarium_topk_seconds": {"value": macro["seconds"],
                                                    "goal": f"<= {wide_search.SEARCH_GOAL_S}",
                                                    "detail": wide},
            "blend_search_herbarium_topk_peak_rss_gb": {"value": macro["peak_rss_gb"],
                                                        "goal": "<= 1.5"}}


def _herbarium(quick: bool) -> dict:
    # 32,000 classes, 512-d prototypes, 2 prototype members + 1 classifier, top-5: prototype
    # members scored in class chunks against the unchunked baseline (full score rows).
    wide = herbarium.measure(images=1_024 if quick else 20_000)
    return {"herbarium_peak_rss_gb": {"value": wide["chunked"]["peak_rss_gb"], "goal": "<= 1.5",
                                      "detail": wide},
            "herbarium_throughput_vs_unchunked": {"value": wide["throughput_vs_unchunked"],
                                                  "goal": ">= 0.7"}}


def _fit_at_scale(quick: bool) -> dict:
    # iMet 2019's OOF shape: blend search (f2, mean and gmean, 5-fold check) and threshold
    # search, each command in a fresh process; memory goal 1.5 x the OOF arrays + 1 GB.
    fit = fit_at_scale.measure(rows=10_000 if quick else fit_at_scale.ROWS)
    blend = max(fit["blend"].values(), key=lambda run: run["seconds"])
    rss = max(run["peak_rss_gb"] for run in fit["blend"].values())
    memory = f"<= {fit['memory_goal_gb']}"
    return {"blend_search_imet_seconds": {"value": blend["seconds"],
                                          "goal": f"<= {fit_at_scale.BLEND_GOAL_S}",
                                          "detail": fit},
            "blend_search_imet_peak_rss_gb": {"value": rss, "goal": memory},
            "threshold_search_imet_seconds": {"value": fit["threshold"]["seconds"],
                                              "goal": f"<= {fit_at_scale.THRESHOLD_GOAL_S}"},
            "threshold_search_imet_peak_rss_gb": {"value": fit["threshold"]["peak_rss_gb"],
                                                  "goal": memory}}


def _startup(quick: bool) -> dict:
    start = startup.measure(runs=1 if quick else 3)
    return {"startup_to_first_batch_s": {"value": start["seconds_median"], "goal": "<= 3",
                                         "detail": start}}


def _decrypt(quick: bool) -> dict:
    crypt = decrypt.measure(mib=32 if quick else 256)
    return {"decrypt_vs_raw_aesgcm": {"value": crypt["kpenc_vs_raw"], "goal": ">= 0.70",
                                      "detail": crypt},
            "decrypt_load_memory_ratio": {"value": crypt["memory"]["ratio"], "goal": "<= 1.2"}}


def _bundle_size(quick: bool) -> dict:
    bundle = bundle_size.measure(runs=3 if quick else 7)
    return {"kernel_bytes": {"value": bundle["kernel_bytes"], "goal": "<= 250000"},
            "build_seconds": {"value": bundle["build_seconds_median"], "goal": "< 2",
                              "detail": {k: v for k, v in bundle.items() if k != "shares"}}}


def _cli_startup(quick: bool) -> dict:
    cli = cli_startup.measure(runs=3 if quick else 7)
    return {"cli_help_seconds": {"value": cli["help_seconds_median"], "goal": "<= 0.5",
                                 "detail": cli},
            "bundle_small_script_seconds": {"value": cli["bundle_seconds_median"],
                                            "goal": "<= 0.5"}}


def _budget(quick: bool) -> dict:
    # The plan against the best subset of the demo ensemble's views (docs/planning.md), and the
    # share of a half-ensemble budget spent on model work.
    kept = budget_value.measure(epochs=1 if quick else budget_value.BENCH_EPOCHS)
    use = budget_use.measure(images=96 if quick else 240)
    return {"budget_value_kept": {"value": kept["value"], "goal": ">= 0.99", "detail": kept},
            "budget_use": {"value": use["value"], "goal": ">= 0.85", "detail": use}}


def _fanout(quick: bool) -> dict:
    # A fan-out of 8 shards against the local service with 1, 2 and 4 workers (2-core machine:
    # the speed-up is bounded by the cores, not by the service).
    figures = fanout.measure_all(4 if quick else 8, (1, 2) if quick else (1, 2, 4))
    return {"fanout_speedup_2_workers": {"value": figures["runs"][1]["speedup"],
                                         "goal": ">= 1.2", "detail": figures}}


def _fanout_top_k(quick: bool) -> dict:
    # The host side of a Herbarium-sized out-of-fold --top-k fan-out (1M rows x 32,093 classes,
    # k = 50, 2 entries): the lists are rows x k x 12 bytes each, and so must the memory be.
    rows = 50_000 if quick else 1_000_000
    figures = fanout_top_k.measure(rows, 32_093, 50)
    lists_gb = rows * 50 * 12 * 2 / 1e9
    return {"fanout_top_k_assembly_peak_rss_gb": {
        "value": figures["peak_rss_gb"], "goal": f"<= {2 * lists_gb + 1:.2f} (2 x the lists + 1)",
        "detail": figures}}


PARTS = {"pipeline": _pipeline, "optimizations": _optimizations, "wide_blend": _wide_blend,
         "herbarium": _herbarium, "wide_search": _wide_search, "fit_at_scale": _fit_at_scale,
         "startup": _startup, "decrypt": _decrypt, "bundle_size": _bundle_size,
         "cli_startup": _cli_startup, "budget": _budget, "fanout": _fanout,
         "fanout_top_k": _fanout_top_k}


def collect(quick: bool, parts: list[str] | None = None) -> dict:
    results = {"machine": machine()}
    for name in parts or PARTS:
        results.update(PARTS[name](quick))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", type=lambda text: text.split(","),
                        help=f"comma-separated parts of {', '.join(PARTS)}")
    args = parser.parse_args()
    unknown = sorted(set(args.only or ()) - set(PARTS))
    if unknown:
        parser.error(f"--only: unknown part {unknown[0]!r}; parts: {', '.join(PARTS)}")
    results = collect(args.quick, args.only)
    print(f"machine: {results['machine']}{'  (quick run)' if args.quick else ''}")
    print(f"{'figure':<40}{'value':>10}  goal")
    for name, row in results.items():
        if isinstance(row, dict):
            print(f"{name:<40}{row['value']:>10}  {row['goal']}")
    if not args.quick:
        if args.only:  # the other parts' figures stay as last recorded
            previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            results = {**previous, **results}
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
