"""tools/options.py: every option of the criterion, and the README's table."""
import pytest

pytest.importorskip("fairseq")

from tests.helpers.cli import run, tool  # noqa: E402

pytestmark = pytest.mark.slow


def test_options_command_lists_every_option():
    from wce_fairseq.criterions.encouraging_ce import EncouragingCrossEntropyConfig
    import dataclasses

    p = run([tool("python"), "-m", "wce_fairseq.tools.options"])
    for f in dataclasses.fields(EncouragingCrossEntropyConfig):
        if f.name not in ("sentence_avg", "cpu", "_name"):
            assert "--" + f.name.replace("_", "-") in p.stdout, f.name


def test_readme_table_is_the_generator_s_output():
    """The README's options table is `python -m wce_fairseq.tools.options --markdown`, verbatim."""
    import os

    from tests.helpers.cli import REPO

    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    begin, end = "<!-- options:begin -->\n", "\n<!-- options:end -->"
    table = readme[readme.index(begin) + len(begin):readme.index(end)]
    p = run([tool("python"), "-m", "wce_fairseq.tools.options", "--markdown"])
    assert table == p.stdout.rstrip("\n")
