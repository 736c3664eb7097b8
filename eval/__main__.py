"""python -m eval {score,measure,report}: score a model on a conflict dataset and analyse it.

    python -m eval measure --model organism --data data/colors --out runs/base
    python -m eval report runs/base runs/aligned --out reports/compare
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .analysis import AnalysisConfig, analyze
from .report import write_report
from .scoring import ScoreConfig, score_dataset


def _add_analysis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all-samples", action="store_true", help="keep samples whose unimodal answers are wrong")
    p.add_argument("--index", default="entropy", help="uncertainty index of the main curve")
    p.add_argument("--bins", default="quantile", choices=["quantile", "fixed"])
    p.add_argument("--n-bins", type=int, default=8)
    p.add_argument("--ambiguous-width", type=float, default=0.5)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--bootstrap", default="group", choices=["group", "sample"],
                   help="resample whole groups (default: their samples share inputs) or single samples")


def _analysis_config(args) -> AnalysisConfig:
    return AnalysisConfig(unimodal_correct=not args.all_samples, index=args.index, bins=args.bins,
                          n_bins=args.n_bins, ambiguous_width=args.ambiguous_width, n_boot=args.n_boot,
                          bootstrap=args.bootstrap)


def score_command(args):
    from align.models import load_vlm
    from data_gen import ConflictData
    data = ConflictData.load(args.data)
    if args.split != "all":
        data = data.split(args.split.split(","))
    vlm = load_vlm(args.model, dtype=args.dtype, device=args.device, revision=args.revision,
                   trust_remote_code=args.trust_remote_code)
    return score_dataset(vlm, data, args.out, ScoreConfig(batch_size=args.batch_size, shard_groups=args.shard_groups,
                                                          lens=not args.no_lens), seed=args.seed)


def print_headline(res: dict, out: Path | None = None) -> None:
    bp = res["balance_point"]
    f = res["following"]
    print(f"balance point: {bp['description']}")
    if f["tfr"] is not None:
        print(f"TFR {f['tfr']:.3f} [{f['tfr_ci'][0]:.3f}, {f['tfr_ci'][1]:.3f}]   VFR {f['vfr']:.3f}   "
              f"n={f['n']}   monotonicity (Spearman) {res['monotonicity']:+.2f}")
    osc = res.get("oscillation")
    if osc and osc["ambiguous"]["mean"] is not None and osc["clear"]["mean"] is not None:
        print(f"oscillation: ambiguous {osc['ambiguous']['mean']:.2f} (n={osc['ambiguous']['n']}), "
              f"clear {osc['clear']['mean']:.2f} (n={osc['clear']['n']})")
    if out:
        print(f"analysis written to {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("score", "measure"):
        s = sub.add_parser(name, help="score a dataset" + (" and analyse it" if name == "measure" else ""))
        s.add_argument("--model", default="organism", help="hub id, local path, or organism[:text|vision|none]")
        s.add_argument("--data", required=True, help="a dataset written by `python -m data_gen`")
        s.add_argument("--out", required=True, help="run directory (re-running resumes it)")
        s.add_argument("--split", default="test", help="split(s), comma-separated, or 'all'")
        s.add_argument("--batch-size", type=int, default=32)
        s.add_argument("--shard-groups", type=int, default=16)
        s.add_argument("--dtype", default="auto")
        s.add_argument("--device", default=None)
        s.add_argument("--revision", default=None)
        s.add_argument("--trust-remote-code", action="store_true")
        s.add_argument("--no-lens", action="store_true", help="skip the logit lens")
        s.add_argument("--seed", type=int, default=0)
        if name == "measure":
            _add_analysis_args(s)
    r = sub.add_parser("report", help="figures, HTML and summary.json for one or more runs")
    r.add_argument("runs", nargs="+")
    r.add_argument("--out", required=True)
    r.add_argument("--names", default=None, help="comma-separated display names")
    _add_analysis_args(r)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd in ("score", "measure"):
            table = score_command(args)
            if table is None:  # a non-main process under accelerate
                return 0
            print(f"scored {len(table)} rows -> {Path(args.out) / 'samples.parquet'}")
            if args.cmd == "measure":
                res = analyze(table, _analysis_config(args))
                path = Path(args.out) / "analysis.json"
                path.write_text(json.dumps(res, indent=2, default=float))
                print_headline(res, path)
        else:
            names = args.names.split(",") if args.names else None
            summary = write_report(args.runs, args.out, _analysis_config(args), names)
            for w in summary["warnings"]:
                print(f"warning: {w}")
            print(f"report: {Path(args.out) / 'report.html'}")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
