"""`make bench`: every benchmark figure, with its goal, in one table and in
`benchmarks/results.json`.

    .venv/bin/python -m benchmarks.run [--quick]

`--quick` shrinks every workload (for a smoke run; its figures are not the recorded ones).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import bundle_size, cli_startup, decrypt, pipeline, startup, wide_blend
from benchmarks.common import machine

RESULTS = Path(__file__).resolve().parent / "results.json"


def collect(quick: bool) -> dict:
    images, repeats = (32, 1) if quick else (128, 2)
    # Compute-bound (ResNet-18) and decode-bound (MobileNetV3-small) ensembles of 4 x 2 views.
    flow = pipeline.measure(images, 4, repeats)
    light = pipeline.measure(images, 4, repeats, "torchvision.mobilenet_v3_small", 128)
    blend = wide_blend.measure(images=2_000 if quick else 20_000)
    start = startup.measure(runs=1 if quick else 3)
    crypt = decrypt.measure(mib=32 if quick else 256)
    bundle = bundle_size.measure(runs=3 if quick else 7)
    cli = cli_startup.measure(runs=3 if quick else 7)
    return {
        "machine": machine(),
        "pipeline_efficiency": {"value": flow["efficiency"], "goal": "<= 1.15",
                                "detail": flow},
        "speedup_vs_peer_baseline": {"value": flow["speedup_vs_baseline"], "goal": ">= 1.5",
                                     "peak_rss_growth_mb": flow["rss_growth_mb"]},
        "pipeline_efficiency_light_models": {"value": light["efficiency"], "goal": "<= 1.15",
                                             "detail": light},
        "speedup_vs_peer_baseline_light_models": {"value": light["speedup_vs_baseline"],
                                                  "goal": ">= 1.5",
                                                  "peak_rss_growth_mb": light["rss_growth_mb"]},
        "wide_blend_peak_rss_gb": {"value": blend["peak_rss_gb"], "goal": "<= 1.5",
                                   "detail": blend},
        "startup_to_first_batch_s": {"value": start["seconds_median"], "goal": "<= 3",
                                     "detail": start},
        "decrypt_vs_raw_aesgcm": {"value": crypt["kpenc_vs_raw"], "goal": ">= 0.70",
                                  "detail": crypt},
        "decrypt_load_memory_ratio": {"value": crypt["memory"]["ratio"], "goal": "<= 1.2"},
        "kernel_bytes": {"value": bundle["kernel_bytes"], "goal": "<= 250000"},
        "build_seconds": {"value": bundle["build_seconds_median"], "goal": "< 2",
                          "detail": {k: v for k, v in bundle.items() if k != "shares"}},
        "cli_help_seconds": {"value": cli["help_seconds_median"], "goal": "<= 0.5",
                             "detail": cli},
        "bundle_small_script_seconds": {"value": cli["bundle_seconds_median"], "goal": "<= 0.5"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = collect(args.quick)
    print(f"machine: {results['machine']}{'  (quick run)' if args.quick else ''}")
    print(f"{'figure':<40}{'value':>10}  goal")
    for name, row in results.items():
        if isinstance(row, dict):
            print(f"{name:<40}{row['value']:>10}  {row['goal']}")
    if not args.quick:
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
