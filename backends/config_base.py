"""Shared machinery of the framework-free family configs: transformers config.json in and out, checks."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .errors import ConfigError


class ConfigBase:
    """Mixin for a dataclass config: validation, and transformers' config.json round trip.

    Keys this config does not model are kept in `extra` and written back unchanged.
    """

    model_type: str = ""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:  # each family checks its own values
        pass

    def fail(self, key: str, message: str):
        raise ConfigError(f"{self.model_type} config: {key}={getattr(self, key, None)!r} {message}")

    def to_dict(self) -> dict:
        # `adapter` (backends/adapters) is written only when set: a model without adapters keeps its config.json
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "extra" and not (f.name == "adapter" and self.adapter is None)}
        data = {**self.extra, **data, "model_type": self.model_type}
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = "config"):
        data = dict(data)
        data.pop("parity_family", None)  # backends.FAMILY_KEY: which family, read by backends.family_of_config
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected {cls.model_type!r}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        cls.rename_hf_keys(known, extra)
        try:
            return cls(**known, extra=extra)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def rename_hf_keys(cls, known: dict, extra: dict) -> None:
        """Move transformers aliases found in `extra` into `known` (families override)."""

    @classmethod
    def from_json_file(cls, path):
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, source=str(path))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def check_positive_int(config, *keys):
    for key in keys:
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            config.fail(key, "must be a positive integer")


def check_probability(config, *keys):
    for key in keys:
        value = getattr(config, key)
        if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            config.fail(key, "must be a probability in [0, 1)")


def check_choice(config, key, choices):
    if getattr(config, key) not in choices:
        config.fail(key, f"must be one of {', '.join(map(str, choices))}")


def check_adapter(config) -> None:
    """The `adapter` field: None or an adapter config string the `adapters` library reads (backends/adapters)."""
    if config.adapter is not None:
        from .adapters import parse_adapter_config

        try:
            parse_adapter_config(config.adapter)
        except ConfigError as exc:
            raise ConfigError(f"{config.model_type} config: adapter: {exc}") from None
