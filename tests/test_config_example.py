"""config.example.yaml documents every option, each at its default value."""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from registry.config import Config, load_config
from tests.support.server import ROOT

EXAMPLE = ROOT / "config.example.yaml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def _flatten(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for name, value in data.items():
        if isinstance(value, dict) and value:
            keys |= _flatten(value, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_example_lists_every_option() -> None:
    assert _flatten(yaml.safe_load(EXAMPLE.read_text())) == _keys(Config)


def test_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [v for v in os.environ if v.startswith("DOCKYARD_")]:
        monkeypatch.delenv(variable)
    assert load_config(EXAMPLE) == Config()
