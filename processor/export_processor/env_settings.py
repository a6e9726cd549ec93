"""The one settings pattern of every component (webhook, operator, processor): a pydantic-settings
class per concern, its fields typed and described, read once from the environment in the
project's one grammar (docs/configuration.md): booleans by `common.parse_bool`, empty = unset,
comma-separated lists.

A component's settings hold its concerns' classes as fields (its groups). Values given in code, to
the constructor or to `from_env`, are named flat: a group's field as its variable without the
component's prefix (`lease_name`, `csv_delimiter`), and `route` takes each to its group.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self

from pydantic import AliasChoices, BeforeValidator, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from export_processor.common import parse_bool


def from_text(parse: Callable[[str], object]) -> BeforeValidator:
    """A field's text from the environment parsed by `parse`; values given in code taken as
    they are."""
    return BeforeValidator(lambda value: parse(value) if isinstance(value, str) else value)


def split_commas(text: str) -> tuple[str, ...]:
    """`a, b,,c` → `("a", "b", "c")`."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _json(value: object) -> object:
    value = json.loads(value) if isinstance(value, str) else value
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


Flag = Annotated[bool, from_text(parse_bool)]
"""A boolean in the one grammar (`true`/`1`/`yes`/`on`, `false`/`0`/`no`/`off`)."""
CommaList = Annotated[tuple[str, ...], NoDecode, from_text(split_commas)]
"""Comma-separated values (not JSON), spaces around each ignored."""
CommaListOrNone = Annotated[
    tuple[str, ...] | None, NoDecode, from_text(lambda text: split_commas(text) or None)
]
"""The same, where no value at all (None) means "the default, worked out from other settings"."""
JsonStrings = Annotated[dict[str, str], NoDecode, BeforeValidator(_json)]
"""A JSON object of strings (`{"AWS_ENDPOINT_URL": "http://minio:9000"}`)."""
JsonObject = Annotated[dict[str, Any], NoDecode, BeforeValidator(_json)]
"""A JSON object."""


@dataclass(frozen=True)
class ReadBy:
    """Marks a field (`Annotated[T, ReadBy(...)]`) that `read` takes from the whole environment
    instead of one variable of its own: a value of several variables, or one whose empty value
    means something."""

    read: Callable[[Mapping[str, str]], Any]
    variables: tuple[str, ...]


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # As pydantic-settings reads os.environ: names in any case, empty values left out.
        return {name.lower(): value for name, value in self._environ.items() if value != ""}


def _aliases(info: FieldInfo) -> tuple[str, ...]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (alias,) if isinstance(alias, str) else ()


class EnvSettings(BaseSettings):
    """Settings built in code take exactly the values given; `from_env` reads the environment."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_ignore_empty=True,
        validate_by_name=True,
        arbitrary_types_allowed=True,
        use_attribute_docstrings=True,
    )
    COMPONENT: ClassVar[str] = "settings"
    NOT_FROM_ENV: ClassVar[frozenset[str]] = frozenset()
    """Fields only code may set (tests): never read from the environment."""

    def __init_subclass__(cls, component: str = "", **kwargs: Any) -> None:
        """`class Group(EnvSettings, env_prefix="EXPORTJOBS_X_", component="x")`: the variables'
        prefix (pydantic-settings' `env_prefix`) and the component errors name (COMPONENT)."""
        super().__init_subclass__(**kwargs)
        cls.COMPONENT = component or cls.COMPONENT

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @classmethod
    def groups(cls) -> dict[str, type[EnvSettings]]:
        """The fields that are settings of their own: one concern's variables each."""
        return {
            name: info.annotation
            for name, info in cls.model_fields.items()
            if isinstance(info.annotation, type) and issubclass(info.annotation, EnvSettings)
        }

    @classmethod
    def read_by(cls) -> dict[str, ReadBy]:
        """The fields read from the whole environment (ReadBy)."""
        return {
            name: mark
            for name, info in cls.model_fields.items()
            for mark in info.metadata
            if isinstance(mark, ReadBy)
        }

    @classmethod
    def route(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` keyed by field: a variable's name for its field's, and a group's field given
        flat (named as its variable without the prefix: `lease_name`) under its group."""
        fields = {a.lower(): f for f, info in cls.model_fields.items() for a in _aliases(info)}
        routed = {fields.get(key.lower(), key): value for key, value in values.items()}
        prefix = str(cls.model_config.get("env_prefix", "")).lower()
        for name, group in cls.groups().items():
            flat = {group.env_name(f).lower().removeprefix(prefix): f for f in group.model_fields}
            mine = {flat[key]: routed.pop(key) for key in list(routed) if key in flat}
            if mine:
                routed[name] = {**dict(routed.get(name, {})), **mine}
        return routed

    @model_validator(mode="before")
    @classmethod
    def _routed(cls, data: Any) -> Any:
        return cls.route(data) if isinstance(data, dict) else data

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: Any) -> Self:
        """Read the settings from `environ` (default `os.environ`); `given` values win, named as
        `route` takes them (`max_running`, `lease_name`).

        Raises:
            ValueError: naming the variable, when one holds an invalid value.
        """
        env = os.environ if environ is None else environ
        given = cls.route(given)
        groups, read_by = cls.groups(), cls.read_by()
        try:
            values = {
                key: value
                for key, value in cls.route(_Environ(cls, env)()).items()
                if key not in cls.NOT_FROM_ENV and key not in groups and key not in read_by
            }
            values |= {name: mark.read(env) for name, mark in read_by.items() if name not in given}
        except (SettingsError, ValueError) as exc:
            raise ValueError(f"invalid {cls.COMPONENT} settings: {exc}") from None
        for name, group in groups.items():
            mine = given.pop(name, {})
            values[name] = mine if isinstance(mine, group) else group.from_env(env, **mine)
        try:
            return cls(**{**values, **given})
        except ValidationError as exc:
            problems = "; ".join(map(cls._problem, exc.errors()))
            raise ValueError(f"invalid {cls.COMPONENT} settings: {problems}") from None

    @classmethod
    def _problem(cls, error: ErrorDetails) -> str:
        """`VARIABLE: where.inside: what is wrong`."""
        loc = [str(part) for part in error["loc"]]
        name = cls.env_name(loc[0]) if loc and loc[0] in cls.model_fields else ""
        where = [name or loc[0], ".".join(loc[1:])] if loc else []
        return ": ".join([*filter(None, where), error["msg"].removeprefix("Value error, ")])

    @classmethod
    def variables(cls) -> set[str]:
        """Every environment variable `from_env` reads."""
        names: set[str] = set()
        groups, read_by = cls.groups(), cls.read_by()
        for field, info in cls.model_fields.items():
            if field in groups:
                names |= groups[field].variables()
            elif field in read_by:
                names |= set(read_by[field].variables)
            elif field not in cls.NOT_FROM_ENV:
                names |= set(_aliases(info) or (cls.env_name(field),))
        return names

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable a field is read from (the first, where there are several)."""
        info: FieldInfo | None = cls.model_fields.get(field)
        aliases = _aliases(info) if info else ()
        return aliases[0] if aliases else f"{cls.model_config.get('env_prefix', '')}{field}".upper()
