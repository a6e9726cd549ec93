"""One grammar for every setting of every component (docs/configuration.md), and the docs' tables
naming exactly the variables each component reads.

The webhook, the operator, the callback policy they share and the processor read booleans with
export_processor.common.parse_bool; these tests feed each of them the same texts and hold the
answers equal, so a component with a parser of its own (one once took `on` for false) fails.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_operator.callbacks import CallbackPolicy
from export_operator.controller.settings import OperatorSettings
from export_operator.webhook.settings import WebhookSettings
from export_processor.common import FALSE_WORDS, TRUE_WORDS, parse_bool
from export_processor.errors import InvalidConfigError
from export_processor.settings import ProcessorSettings
from tests.support.cluster import REPO

WORDS = sorted(TRUE_WORDS | FALSE_WORDS)
PROCESSOR_ENV = {
    "EXPORTJOBS_SOURCE_URI": "file:///in.csv",
    "EXPORTJOBS_DESTINATION_URI": "file:///out/",
    "EXPORTJOBS_FORMAT": "csv",
}


@st.composite
def recased(draw: st.DrawFn, words: list[str]) -> str:
    """A word of the grammar in any case, with spaces around it."""
    word = draw(st.sampled_from(words))
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    cased = "".join(c.upper() if flip else c for c, flip in zip(word, flips, strict=True))
    return draw(st.sampled_from(["", " ", "\t"])) + cased + draw(st.sampled_from(["", " "]))


TEXTS = st.one_of(
    recased(WORDS),
    st.sampled_from(["t", "f", "y", "n", "enabled", "disabled", "2", "-1", "truee", "none"]),
    st.text(max_size=6).filter(str.strip),
)


def _answer(read: object, text: str) -> bool | str:
    """What a reader makes of `text`: the boolean, or "refused"."""
    try:
        value = read(text)  # type: ignore[operator]
    except (ValueError, InvalidConfigError):
        return "refused"
    assert isinstance(value, bool)
    return value


READERS = {
    "common": parse_bool,
    "webhook": lambda t: (
        WebhookSettings.from_env({"EXPORTJOBS_WEBHOOK_ACCESS_LOG": t}).http.access_log
    ),
    "operator": lambda t: (
        OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_HEAD_SOURCE": t}).pod.head_source
    ),
    "callback policy": lambda t: (
        CallbackPolicy.from_env({"EXPORTJOBS_CALLBACK_ALLOW_HTTP": t}).allow_http
    ),
    "processor": lambda t: (
        ProcessorSettings.from_env({**PROCESSOR_ENV, "EXPORTJOBS_CSV_HEADER": t}).csv.header
    ),
}


@settings(deadline=None)  # five settings readers per example (read once at start-up): not timed
@given(TEXTS)
def test_every_component_reads_a_boolean_the_same_way(text: str) -> None:
    expected: bool | str = "refused"
    if text.strip().lower() in TRUE_WORDS:
        expected = True
    elif text.strip().lower() in FALSE_WORDS:
        expected = False
    answers = {name: _answer(read, text) for name, read in READERS.items()}
    assert answers == dict.fromkeys(READERS, expected), text


@pytest.mark.parametrize("name", [n for n in READERS if n != "common"])
def test_a_refused_boolean_names_its_variable(name: str) -> None:
    with pytest.raises((ValueError, InvalidConfigError), match="EXPORTJOBS_"):
        READERS[name]("maybe")


@pytest.mark.parametrize(
    ("title", "settings"),
    [
        ("Webhook", WebhookSettings),
        ("Operator", OperatorSettings),
        ("Processor", ProcessorSettings),
    ],
)
def test_the_configuration_docs_list_the_variables_read(title: str, settings: type) -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    section = doc[doc.index(f"## {title}\n") :].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "".join(rows)))
    mentioned = set(re.findall(r"`\$?([A-Z][A-Z0-9_]+)`", section))
    assert listed <= settings.variables() <= mentioned
