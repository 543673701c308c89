"""Checks shared by the resume and parallel-search tests: a run dir is consistent after any crash."""

import json
from collections import Counter
from pathlib import Path

from avo.archive import Archive
from avo.lineage import Lineage
from avo.search.engine import EVENTS


def events(run_dir):
    return [json.loads(x) for x in (Path(run_dir) / EVENTS).read_text().splitlines()]


def check_consistent(run_dir, n):
    """Rows 1..n, no evaluation finished twice, lineage and archive agree, no candidate committed
    twice, and the lineage holds exactly the accepted rows."""
    archive = Archive(run_dir)
    rows = archive.candidates()
    assert [r.id for r in rows] == list(range(1, n + 1))
    done = Counter((e["candidate"], e["kind"]) for e in events(run_dir)
                   if e["event"] == "evaluate" and e["phase"] == "done")
    assert done and max(done.values()) == 1, done  # no evaluation finished twice
    lineage = Lineage.of_run(run_dir).versions()
    assert [v.sha for v in lineage] == [v.sha for v in archive.versions()]
    assert len({v.candidate for v in lineage}) == len(lineage)  # no candidate committed twice
    assert [v.candidate for v in lineage[1:]] == [r.id for r in rows if r.accepted]
    return rows
