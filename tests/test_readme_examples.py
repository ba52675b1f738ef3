"""Issue 36, item 3: the README's examples run top to bottom in one checkout: every output
they write is under runs/ (git-ignored), and the command-line run and the Python API run
do not share a job directory (the second would be refused as another job's)."""
import inspect
import pathlib
import re

import support

ROOT = support.REPO_ROOT
OUTPUT_FLAG = re.compile(r"""(?:--output_dir|--plot|--output|output_dir=)\s*["']?([^\s"',)]+)""")


def code_blocks(text):
    return re.findall(r"```(?:bash|python)\n(.*?)```", text, flags=re.S)


def readme_outputs():
    return [path for block in code_blocks((ROOT / "README.md").read_text())
            for path in OUTPUT_FLAG.findall(block)]


def test_every_readme_example_writes_under_the_ignored_runs_folder():
    outputs = readme_outputs()
    assert len(outputs) >= 10
    assert [p for p in outputs if not p.startswith("runs/")] == []
    assert "/runs/" in (ROOT / ".gitignore").read_text().split()


def test_cli_and_python_training_examples_use_their_own_directories():
    text = (ROOT / "README.md").read_text()
    cli = re.search(r"--algorithm FGMix --test_envs 0 \\\n\s+--output_dir (\S+)", text).group(1)
    api = re.search(r'output_dir="([^"]+)"', text).group(1)
    assert cli != api


def test_the_readme_states_train_s_signature():
    """"The signature: `train(...)`" in README.md is domainbed.train's, name for name and
    default for default (a keyword added to the API shows up here)."""
    from domainbed.training.api import train

    text = " ".join((ROOT / "README.md").read_text().split())
    stated = re.search(r"The signature: `train\(\*, (.*?)\)`", text).group(1)
    ours = ", ".join(str(p) for p in inspect.signature(train).parameters.values())
    assert stated.replace("\"", "'") == ours
