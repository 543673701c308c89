"""The lineage: a git repo with one commit per version, rationale + trailers, usable without git config."""

import subprocess

import pytest

from avo.lineage import Lineage, LineageError, format_message, parse_message


@pytest.fixture
def bare_home(tmp_path, monkeypatch):
    # No global git identity: the lineage must carry its own.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    return home


def test_message_round_trip():
    msg = format_message("knob block_n 64 -> 128\n\nlarger tiles amortise the loop",
                         {"Candidate": 7, "Score": "12.3", "Speedup-vs-cudnn": "1.02", "Skip": None})
    subject, body, trailers = parse_message(msg)
    assert subject == "knob block_n 64 -> 128"
    assert body == "larger tiles amortise the loop"
    assert trailers == {"Candidate": "7", "Score": "12.3", "Speedup-vs-cudnn": "1.02"}
    assert parse_message("just a subject") == ("just a subject", "", {})


def test_commits_versions_show_diff(tmp_path, bare_home):
    lin = Lineage.of_run(tmp_path)
    assert not lin.exists() and lin.head() is None
    lin.init()
    lin.init()  # idempotent
    assert lin.versions() == []
    s0 = lin.commit("X = 1\n", "seed: kernels/x.py", {"Candidate": 0, "Score": "1.5"},
                    extra_files={"README.md": "hi\n"})
    s1 = lin.commit("X = 2\n", "bump X\n\nbecause", {"Candidate": 3, "Operator": "knob", "Score": "2.5"})
    versions = lin.versions()
    assert [v.sha for v in versions] == [s0, s1] and lin.head() == s1
    assert versions[1].index == 1 and versions[1].candidate == 3 and versions[1].score == 2.5
    assert versions[1].rationale == "bump X\n\nbecause"
    assert lin.find_candidate(3).sha == s1 and lin.find_candidate(9) is None
    assert lin.show(0) == "X = 1\n" and lin.show(s1) == "X = 2\n" and lin.show() == "X = 2\n"
    assert "-X = 1" in lin.diff(0, 1) and "+X = 2" in lin.diff(s0)
    assert "bump X" in lin.log_text()
    with pytest.raises(LineageError):
        lin.show(5)
    # A plain git user sees the same story.
    log = subprocess.run(["git", "-C", str(lin.path), "log", "--format=%an %s"], capture_output=True, text=True)
    assert log.stdout.splitlines() == ["avo bump X", "avo seed: kernels/x.py"]
