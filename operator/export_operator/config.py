"""What the webhook's and the operator's settings share: one declarative pydantic-settings class per
component, its fields typed and described, read once from the environment in the project's one
grammar (docs/configuration.md): booleans by `export_processor.common.parse_bool`, empty = unset,
comma-separated lists, secrets from files by `export_operator.secret_files`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import AliasChoices, BeforeValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from export_operator.callbacks import ENV_ALLOW_HTTP, ENV_ALLOWLIST, CallbackPolicy
from export_processor.common import parse_bool


def _flag(value: object) -> object:
    return parse_bool(value) if isinstance(value, str) else value


def split_commas(text: str) -> tuple[str, ...]:
    """`a, b,,c` → `("a", "b", "c")`."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _commas(value: object) -> object:
    return split_commas(value) if isinstance(value, str) else value


Flag = Annotated[bool, BeforeValidator(_flag)]
"""A boolean in the one grammar (`true`/`1`/`yes`/`on`, `false`/`0`/`no`/`off`)."""
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_commas)]
"""Comma-separated values (not JSON), spaces around each ignored."""
CommaListOrNone = Annotated[
    tuple[str, ...] | None,
    NoDecode,
    BeforeValidator(lambda value: split_commas(value) or None if isinstance(value, str) else value),
]
"""The same, where no value at all (None) means "the default, worked out from other settings"."""


def _json(value: object) -> object:
    value = json.loads(value) if isinstance(value, str) else value
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


JsonStrings = Annotated[dict[str, str], NoDecode, BeforeValidator(_json)]
"""A JSON object of strings (`{"AWS_ENDPOINT_URL": "http://minio:9000"}`)."""
JsonObject = Annotated[dict[str, Any], NoDecode, BeforeValidator(_json)]
"""A JSON object."""


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # As pydantic-settings reads os.environ: names in any case, empty values left out.
        return {name.lower(): value for name, value in self._environ.items() if value != ""}


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
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: Any) -> Self:
        """Read the settings from `environ` (default `os.environ`); `given` values win, named as
        the variables are without the prefix (`max_running`, `lease_name`: a group's field is
        routed to its group). A `callback_policy` comes from the variables webhook and operator
        share (callbacks.py).

        Raises:
            ValueError: naming the variable, when one holds an invalid value.
        """
        env = os.environ if environ is None else environ
        groups = cls.groups()
        try:
            values = {
                k: v
                for k, v in _Environ(cls, env)().items()
                if k not in cls.NOT_FROM_ENV and k not in groups
            }
            if "callback_policy" in cls.model_fields:
                values["callback_policy"] = CallbackPolicy.from_env(env)
        except (SettingsError, ValueError) as exc:
            raise ValueError(f"invalid {cls.COMPONENT} settings: {exc}") from None
        prefix = str(cls.model_config.get("env_prefix", "")).lower()
        for name, group in groups.items():
            if name not in given:
                flat = {
                    group.env_name(f).lower().removeprefix(prefix): f for f in group.model_fields
                }
                mine = {flat[k]: given.pop(k) for k in list(given) if k in flat}
                values[name] = group.from_env(env, **mine)
        try:
            return cls(**{**values, **given})
        except ValidationError as exc:
            problems = "; ".join(
                (f"{cls.env_name(str(error['loc'][0]))}: " if error["loc"] else "")
                + error["msg"].removeprefix("Value error, ")
                for error in exc.errors()
            )
            raise ValueError(f"invalid {cls.COMPONENT} settings: {problems}") from None

    @classmethod
    def variables(cls) -> set[str]:
        """Every environment variable `from_env` reads."""
        names: set[str] = set()
        for field, info in cls.model_fields.items():
            alias = info.validation_alias
            if field in cls.groups():
                names |= cls.groups()[field].variables()
            elif field == "callback_policy":
                names |= {ENV_ALLOWLIST, ENV_ALLOW_HTTP}
            elif isinstance(alias, AliasChoices):
                names |= {str(choice) for choice in alias.choices}
            elif field not in cls.NOT_FROM_ENV:
                names.add(cls.env_name(field))
        return names

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable a field is read from (the first, where there are several)."""
        info: FieldInfo | None = cls.model_fields.get(field)
        alias = info.validation_alias if info else None
        if isinstance(alias, AliasChoices):
            alias = alias.choices[0]
        if isinstance(alias, str):
            return alias
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()
