"""models.trusted (the webhook's hot-path construction) builds exactly what model_construct
builds, for every model the webhook builds that way and any subset of fields: a pydantic upgrade
that changes what an instance holds fails here, not in production."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from export_operator.models import (
    CsvOptions,
    DestinationSpec,
    ExportJobSpec,
    NotifySpec,
    SourceSpec,
    trusted,
)
from export_operator.resource import ExportFormat

SOURCE = SourceSpec.model_construct(uri="s3://exports-input/a.csv")
VALUES: dict[type[BaseModel], dict[str, Any]] = {
    SourceSpec: {"uri": "s3://exports-input/a.csv", "version_id": "v1", "etag": '"abc"'},
    DestinationSpec: {"uri": "s3://out/p/"},
    NotifySpec: {"url": "https://hooks.example.com/x"},
    ExportJobSpec: {
        "source": SOURCE,
        "export_format": ExportFormat.PARQUET,
        "destination": DestinationSpec.model_validate({"uri": "s3://out/p/"}),
        "csv": CsvOptions.model_validate({"delimiter": ";"}),
        "notify": NotifySpec.model_validate({"url": "https://hooks.example.com/x"}),
        "parallelism": 4,
        "owner": "team-a",
    },
}


@given(data=st.data())
def test_trusted_is_model_construct(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(list(VALUES)))
    names = data.draw(st.sets(st.sampled_from(sorted(VALUES[cls]))))
    values = {name: VALUES[cls][name] for name in names}
    fast, slow = trusted(cls, dict(values)), cls.model_construct(set(values), **dict(values))
    assert type(fast) is type(slow)
    assert list(fast.__dict__.items()) == list(slow.__dict__.items())
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.__pydantic_private__ == slow.__pydantic_private__
    dump = {"mode": "json", "by_alias": True, "exclude_unset": True}
    assert fast.model_dump(**dump) == slow.model_dump(**dump)  # type: ignore[arg-type]
    assert fast == slow
