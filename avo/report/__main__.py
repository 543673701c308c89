"""`python -m avo.report RUN_OR_SWEEP_DIR... [--html OUT.html] [--wandb ENTITY/PROJECT]`

Reads each run dir (a sweep dir stands for every run below it) and writes a one-file HTML report
(the default, `report.html`) and/or a W&B report of the same panels.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from avo.errors import fail


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        fail(f"{message} (see python -m avo.report --help)")


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = _Parser(prog="python -m avo.report", description=__doc__.strip().splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP_DIR", help="run dirs and/or sweep (multirun) dirs")
    p.add_argument("--html", metavar="OUT.html", help="write the HTML report here (default: report.html "
                                                        "unless --wandb is given)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also build and save a W&B report there "
                                                               "(needs network; sync offline runs first)")
    p.add_argument("--title", default="avo report")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    from avo.archive import DamagedArchive
    from avo.report.data import ReportError, load

    try:
        runs, keys = load(args.paths)
    except (ReportError, FileNotFoundError, DamagedArchive) as exc:
        fail(str(exc))
    html_out = args.html or (None if args.wandb else "report.html")
    if html_out:
        from avo.report import html

        out = html.write(html_out, runs, keys, args.paths, args.title)
        print(f"wrote {out} ({len(runs)} run(s))")
    if args.wandb:
        from avo.report import wandb_report

        try:
            entity, project = wandb_report.parse_target(args.wandb)
            report = wandb_report.build(runs, keys, entity, project, args.title)
            url = wandb_report.save(report)
        except ImportError as exc:
            fail(f"--wandb needs wandb-workspaces (pip install wandb-workspaces): {exc}")
        except (ValueError, RuntimeError) as exc:
            fail(f"W&B report not saved: {exc}")
        print(f"saved the W&B report: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
