"""Every command block a user would paste is run by a test, or says why it is not."""

from __future__ import annotations

import pytest

from tests.support.docs_blocks import DOCS, block, shell_blocks

RUN_BY_TESTS = {
    ("README.md", "Install on a cluster", "helm install exportjobs"),
    ("README.md", "The API", "/v1/exports"),
}
"""(doc, heading, a snippet): the blocks tests/e2e/test_docs_as_written.py runs."""


@pytest.mark.parametrize("doc", DOCS)
def test_each_block_is_run_or_says_why_not(doc: str) -> None:
    run = {block(*key).text for key in RUN_BY_TESTS if key[0] == doc}
    for found in shell_blocks(doc):
        assert found.text in run or found.illustrative, (
            f"{doc} / {found.heading}: a command block no test runs and no "
            f"'*Not run by the tests: why.*' line before it:\n{found.text}"
        )


def test_continuation_lines_make_one_command() -> None:
    install = block(*sorted(RUN_BY_TESTS)[0]).commands()
    assert len(install) == 2 and install[0].startswith("helm install exportjobs")
    assert install[1].startswith("helm test exportjobs")
    assert "--set 's3.allowedSources=" in install[0]
