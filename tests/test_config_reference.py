"""The configuration reference is generated from the config's ``Field`` descriptions: every field
has one, and the committed ``docs/configuration.md`` is what the generator writes now."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from introroute.router.config_reference import COMMAND, missing_descriptions, models, render

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_every_config_field_has_a_description():
    assert not missing_descriptions(), f"add Field(description=...) to: {missing_descriptions()}"


def test_the_committed_reference_is_current():
    assert DOC.read_text() == render(), f"docs/configuration.md is stale: run {COMMAND}"


def test_every_nested_model_gets_a_section():
    paths = dict((model.__name__, where) for where, model in models())
    assert paths["RouterConfig"] == "" and paths["CalibrationConfig"] == "gatekeeper.calibration.<key>"
    assert paths["Backoff"] == "retries.backoff" and paths["Price"] == "tiers[].price"
    assert all(f"## {name}\n" in render() for name in paths)


def test_a_field_without_description_is_reported():
    class Inner(BaseModel):
        bare: int = 1
        told: int = Field(default=1, description="said")

    class Outer(BaseModel):
        inner: list[Inner] | None = Field(default=None, description="nested")

    assert [(where, model) for where, model in models(Outer)] == [("", Outer), ("inner[]", Inner)]
    assert missing_descriptions(Outer) == ["inner[].bare"]
