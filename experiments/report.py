"""Compare the runs of a sweep: `python experiments/report.py <sweep dir> [--out DIR]`.

A thin command line over sg2video.sweeps (reading, tables, plots, page): see its docstring for every output.
"""
from __future__ import annotations

import argparse
import sys

from sg2video.sweeps import *  # noqa: F401,F403 - the library, for callers that load this script
from sg2video.sweeps import ReportError, write_sweep_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun directory (holds <job number>/ folders)")
    parser.add_argument("--out", default=None, help="where to write the report (default: the sweep directory)")
    args = parser.parse_args(argv)
    try:
        summary, paths = write_sweep_report(args.sweep_dir, args.out)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = sum(job.failure is not None for job in summary.jobs)
    print(f"{len(summary.jobs)} jobs ({failed} failed) in {len(summary.arms)} arms")
    for path in paths.values():
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
