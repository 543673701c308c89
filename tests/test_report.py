"""The HTML report and the W&B report spec, over a synthetic sweep written with the real archive,
lineage and metrics APIs (4 runs: two models x two seeds; accepted versions, failures, costs,
baselines), and the CLI's one-line errors."""

import base64
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from avo.archive import Archive, Candidate, Version, source_hash
from avo.lineage import Lineage
from avo.logging.jsonl import JsonlLogger
from avo.logging.jsonl import read as jsonl_read
from avo.report import data, html, wandb_report

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ["b4_s4096_h16_d128", "b4_s8192_h16_d128_causal"]
PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(tflops: float, baselines: bool = True) -> list[dict]:
    return [{"label": lbl, "shape": {}, "tflops": tflops * (1 + 0.1 * i),
             "baselines": {"cudnn": 500.0 + i, "fa2": 400.0 + i, "fa4": 600.0 + i} if baselines else {}}
            for i, lbl in enumerate(SHAPES)]


def make_run(run_dir: Path, model: str, seed: int, steps: list[tuple[str, str, float | None]],
             wandb_id: str | None = "id") -> None:
    """steps: (status, verdict, score) per iteration; verdict 'accepted' makes a lineage version."""
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"name": "mha_h100", "model": {"name": model}, "search": {"seed": seed, "max_iterations": len(steps)},
              "attention": {"suite": "mha"}, "hardware": {"name": "h100", "baselines": ["cudnn", "fa2", "fa4"]},
              # Differ between runs but change no result: never in a label.
              "logger": {"name": f"wandb-{model}-{seed}"}, "knowledge": {"cache_dir": f"/tmp/k{seed}"}}
    config["search"].update(allow_changed_config=bool(seed % 2))
    config["model"].update(timeout_s=60 + seed, api_key_env=f"KEY_{seed}")
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model={model}", f"search.seed={seed}"]))
    if wandb_id:
        (run_dir / "wandb_id").write_text(wandb_id + "\n")
    lineage = Lineage.of_run(run_dir)
    lineage.init()
    src = "KNOBS = {}\n"
    sha = lineage.commit(src, "seed: kernels/cute_dsl/sm90/fmha_fwd.py", {"Candidate": 0, "Score": 300})
    log = JsonlLogger(run_dir)
    with Archive(run_dir) as archive:
        archive.add_seed(Version(0, 0, sha, source_hash(src), 300.0, {"cudnn": 0.6}, _metrics(300.0)),
                         meta={"seed_origin": "kernels/cute_dsl/sm90/fmha_fwd.py"})
        best, n_versions, elapsed = 300.0, 1, 0.0
        for i, (status, verdict, score) in enumerate(steps, start=1):
            src = f"KNOBS = {{'step': {i}}}\n"
            accepted = verdict == "accepted"
            cand = Candidate(id=i, parent=0, operator="avo", status=status, verdict=verdict, accepted=accepted,
                             source_hash=source_hash(src), rationale=f"idea {i} | with <b>markup</b>",
                             score=score, metrics=_metrics(score) if score else None, best_score=best,
                             tokens=1000 * i, cost_usd=0.25, wall_s=60.0)
            version = None
            if accepted:
                sha = lineage.commit(src, f"idea {i}: pipeline the softmax", {"Candidate": i, "Score": score})
                version = Version(n_versions, i, sha, source_hash(src), score,
                                  {"cudnn": score / 500, "fa2": score / 400, "fa4": score / 600}, _metrics(score),
                                  f"idea {i}: pipeline the softmax", path=f"candidates/{i:04d}/kernel.py")
                best, n_versions = score, n_versions + 1
            archive.record(cand, version)
            elapsed += 60.0
            log.iteration({"iteration": i, "elapsed_s": elapsed, "best/score": best})


def make_sweep(root: Path) -> Path:
    sweep = root / "multirun" / "mha_h100" / "2026-01-01_00-00-00"
    plans = {
        ("claude", 0): [("ok", "accepted", 320.0), ("compile_error", "failed:compile", None),
                        ("ok", "accepted", 350.0), ("ok", "slower", 310.0)],
        ("claude", 1): [("ok", "slower", 290.0), ("incorrect", "failed:correctness", None),
                        ("ok", "accepted", 330.0), ("timeout", "failed:benchmark", None)],
        ("gpt", 0): [("crash", "failed:benchmark", None), ("ok", "accepted", 305.0),
                     ("ok", "not-confirmed", 309.0), ("ok", "accepted", 315.0)],
        ("gpt", 1): [("ok", "accepted", 302.0), ("ok", "slower", 301.0), ("ok", "duplicate", 302.0),
                     ("compile_error", "failed:compile", None)],
    }
    for num, ((model, seed), steps) in enumerate(plans.items()):
        make_run(sweep / str(num), model, seed, steps, wandb_id=f"w{model}{seed}")
    return sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return make_sweep(tmp_path_factory.mktemp("report"))


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.h2, self.tables, self._in_h2 = [], [], 0, False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "h2":
            self._in_h2 = True
            self.h2.append("")
        elif tag == "table":
            self.tables += 1

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, text):
        if self._in_h2:
            self.h2[-1] += text


def test_load_groups_by_the_differing_keys(sweep):
    runs, keys = data.load([sweep])
    assert [r.path.name for r in runs] == ["0", "1", "2", "3"]
    assert keys == ["model.name", "search.seed"]
    assert runs[0].label == "model.name=claude, search.seed=0"
    assert runs[0].group == runs[1].group == "model.name=claude"  # seeds are repeats of one setting
    assert runs[2].group == "model.name=gpt"
    assert runs[0].best_curve() == [(0, 0.0, 300.0), (1, 60.0, 320.0), (2, 120.0, 320.0), (3, 180.0, 350.0),
                                    (4, 240.0, 350.0)]
    assert runs[0].outcome_counts() == {"accepted": 2, "compile_error": 1, "slower": 1}
    assert runs[2].outcome_counts() == {"crash": 1, "accepted": 2, "not-confirmed": 1}
    assert runs[0].cost_usd == pytest.approx(1.0) and runs[0].tokens == 10000
    assert data.best_run(runs) is runs[0]
    assert [v.candidate for v in runs[0].lineage] == [0, 1, 3]
    assert runs[0].speedup_curve("cudnn") == [(0, 0.6), (1, 0.64), (2, 0.64), (3, 0.7), (4, 0.7)]
    assert runs[0].speedup_curve("fa2")[0] == (0, None)  # the seed was not timed against fa2
    assert runs[0].best_kernel == runs[0].path / "candidates/0003/kernel.py"


def test_html_report_is_one_file_with_plots(sweep, tmp_path):
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "avo.report", str(sweep), "--html", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "4 run(s)" in proc.stdout
    page = out.read_text()
    parser = _Page()
    parser.feed(page)
    assert len(parser.images) == 6
    for img in parser.images:
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert png.startswith(PNG) and len(png) > 5000  # a real chart, not an empty canvas
    assert parser.h2 == [
        "Runs", "Best score over iterations", "Best score over wall time",
        "Speedup over each baseline over iterations", "Per-shape TFLOP/s of each run's best version", "Candidates: accepted and failure statuses", "Cost",
        "Lineage of the best run: model.name=claude, search.seed=0"]
    assert "<script" not in page and "http://" not in page and "https://" not in page  # nothing fetched
    # Text from the runs is escaped, never markup.
    assert "<b>markup</b>" not in page
    assert "idea 3: pipeline the softmax" in page
    assert "×0.700" in page  # the best version vs cudnn: 350 / 500
    assert "+16.7%" in page  # 350 vs the seed's 300
    assert f"Best kernel: <code>{sweep / '0' / 'candidates/0003/kernel.py'}</code>" in page


def test_every_chart_draws(sweep):
    runs, _ = data.load([sweep])
    from avo.report import plots

    for png in (plots.best_over(runs, "iteration"), plots.best_over(runs, "time"), plots.per_shape(runs),
                plots.outcomes(runs), plots.cost(runs), plots.speedup_over(runs, ["cudnn", "fa4"])):
        assert png.startswith(PNG)


def test_count_axes_have_integer_ticks(sweep, monkeypatch):
    from avo.report import plots

    runs, _ = data.load([sweep])
    figs = []
    monkeypatch.setattr(plots, "_png", lambda fig: figs.append(fig) or PNG)
    plots.outcomes(runs)
    plots.cost(runs)
    plots.best_over(runs, "iteration")
    plots.speedup_over(runs, ["cudnn"])
    outcomes, cost, best, speedup = figs
    for ax in (outcomes.axes[0], cost.axes[1], best.axes[0], speedup.axes[0]):  # candidates, tokens, iterations
        ax.figure.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_a_run_dir_and_overlapping_paths(sweep):
    runs, keys = data.load([sweep / "2", sweep, sweep / "2"])
    assert [r.path.name for r in runs] == ["2", "0", "1", "3"]
    single, no_keys = data.load([sweep / "1"])
    assert no_keys == [] and single[0].label == "1"
    assert "share one configuration" in html.render(single, no_keys, [str(sweep / "1")])


def test_cli_errors_are_one_line(tmp_path):
    for args, needle in (([str(tmp_path / "nope")], "does not exist"),
                         ([str(tmp_path)], "no run in"),
                         ([str(tmp_path), "--bogus"], "unrecognized arguments")):
        proc = subprocess.run([sys.executable, "-m", "avo.report", *args], capture_output=True, text=True,
                              cwd=ROOT)
        assert proc.returncode == 2
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# -- the W&B report (built offline; never saved here) ------------------------------------------------

def test_wandb_report_spec(sweep):
    runs, keys = data.load([sweep])
    report = wandb_report.build(runs, keys, "my-team", "avo", title="models x seeds")
    wr, _ = wandb_report._wr()
    assert (report.entity, report.project, report.title) == ("my-team", "avo", "models x seeds")
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == 1
    (runset,) = grids[0].runsets
    assert (runset.entity, runset.project) == ("my-team", "avo")
    assert runset.groupby == ["config.model.name"]  # seeds are the spread within a group
    assert re.fullmatch(r"Metric\(\"ID\"\) in \[(.*)\]", runset.filters)
    assert set(re.findall(r"'(\w+)'", runset.filters)) == {"wclaude0", "wclaude1", "wgpt0", "wgpt1"}
    panels = {p.title if hasattr(p, "title") else type(p).__name__: p for p in grids[0].panels}
    it, wall = panels["Best score over iterations"], panels["Best score over wall time"]
    assert isinstance(it, wr.LinePlot) and it.x == "Step" and it.y == ["best/score"]
    assert isinstance(wall, wr.LinePlot) and wall.x == "elapsed_s" and wall.y == ["best/score"]
    assert it.groupby_aggfunc == "mean" and it.groupby_rangefunc == "minmax"
    vs = panels["Best version vs baselines (suite geomean speedup)"]
    assert vs.metrics == ["best/speedup_vs_cudnn", "best/speedup_vs_fa2", "best/speedup_vs_fa4"]
    status = panels["Candidates: accepted and failure statuses"]
    assert status.metrics == ["count/accepted", "count/ok", "count/compile_error", "count/incorrect",
                              "count/timeout", "count/crash"]
    assert panels["Cost"].metrics == ["total/cost_usd", "total/tokens"]
    assert panels["WeavePanelSummaryTable"].table_name == "lineage"
    # Every panel serialises to the W&B spec offline (the run set needs the server, panels do not).
    for p in grids[0].panels:
        json.loads(p._to_model().model_dump_json())
    texts = [getattr(b, "text", "") for b in report.blocks]
    headings = [t for b, t in zip(report.blocks, texts) if isinstance(b, wr.H2)]
    assert headings == ["Per-shape TFLOP/s of each run's best version",
                        "Lineage of the best run: model.name=claude, search.seed=0"]
    md = [b.text for b in report.blocks if isinstance(b, wr.MarkdownBlock)]
    assert md[0].splitlines()[0] == "| TFLOP/s | " + " | ".join(SHAPES) + " |"
    assert "| model.name=claude, search.seed=0 (v2) | 350 | 385 |" in md[0]
    assert "idea 3: pipeline the softmax" in md[1] and "×0.700" in md[1]


def test_wandb_report_without_wandb_runs_or_network(sweep, tmp_path, monkeypatch):
    lone = tmp_path / "lone"
    make_run(lone, "claude", 0, [("ok", "accepted", 310.0)], wandb_id=None)
    runs, keys = data.load([lone])
    with pytest.raises(ValueError, match="logger=none"):
        wandb_report.build(runs, keys, "e", "p")
    # No credentials: one line from the CLI, nothing attempted.
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NETRC": str(tmp_path / "none")}
    proc = subprocess.run([sys.executable, "-m", "avo.report", str(sweep), "--wandb", "my-team/avo"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("avo: error: W&B report not saved: no W&B credentials: run `wandb login` "
                                   "or set WANDB_API_KEY")
    assert not (tmp_path / "report.html").exists()  # --wandb alone writes no HTML
    # Credentials but no route to the server: one line too.
    env.update(WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "avo.report", str(sweep), "--wandb", "my-team/avo"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "cannot reach http://127.0.0.1:9" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "avo.report", str(sweep), "--wandb", "no-slash"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "ENTITY/PROJECT" in proc.stderr


def test_replayed_iterations_keep_the_time_they_first_ran(tmp_path):
    run = tmp_path / "r"
    make_run(run, "claude", 0, [("ok", "accepted", 320.0), ("ok", "slower", 310.0)])
    before = data.read_run(run).elapsed
    with open(run / "metrics.jsonl", "a") as f:  # replayed lines, later (as loggers before dedup wrote them)
        for i in (1, 2):
            f.write(json.dumps({"event": "iteration", "iteration": i, "elapsed_s": 5000.0 + i}) + "\n")
    assert data.read_run(run).elapsed == before == {1: 60.0, 2: 120.0}
    log = JsonlLogger(run)  # a rebuild replays iterations 1-2 and runs 3: only 3 is new
    for i in (1, 2, 3):
        log.iteration({"iteration": i, "elapsed_s": 6000.0 + i})
    lines = [m["iteration"] for m in jsonl_read(run, "iteration")]
    assert lines == [1, 2, 1, 2, 3]


def test_a_rebuilds_replayed_iterations_reach_only_the_console(tmp_path):
    # W&B logged iterations 1-2 when they ran; a rebuild replays them before running 3. Logged to
    # W&B again, its steps would repeat (the logger before this wrote steps 1, 2, 1, 2, 3).
    from avo.logging.base import MultiLogger

    class Recorder:
        def __init__(self, replays=False):
            self.shows_replays, self.steps = replays, []

        def iteration(self, metrics):
            self.steps.append(metrics["iteration"])

    first = Recorder()
    MultiLogger([JsonlLogger(tmp_path), first]).iteration({"iteration": 1})
    MultiLogger([JsonlLogger(tmp_path), first]).iteration({"iteration": 2})
    wandb, console = Recorder(), Recorder(replays=True)
    log = MultiLogger([JsonlLogger(tmp_path), console, wandb])  # a new process, the same run dir
    for i in (1, 2, 3):
        log.iteration({"iteration": i})
    assert first.steps == [1, 2] and wandb.steps == [3] and console.steps == [1, 2, 3]
    assert [m["iteration"] for m in jsonl_read(tmp_path, "iteration")] == [1, 2, 3]
