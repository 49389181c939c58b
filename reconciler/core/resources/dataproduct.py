"""`type: dataproduct`: a bundle plus product context: domain, input and output ports, SLOs."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from reconciler.core.ids import NAME_RE
from reconciler.core.resource import Ref

from .bundle import BundleSection
from .common import Dataset, Header, Model, Name, PositiveDuration, Text, duplicates, fail


class Port(Model):
    label = "port"
    name: Name
    dataset: Dataset
    description: str | None = None


class FreshnessSlo(Model):
    dataset: Dataset
    max_age: PositiveDuration


def _fraction(value: float) -> float:
    if not 0 < value <= 1:
        hint = f" (write {value / 100:g} for {value:g}%)" if 1 < value <= 100 else ""
        raise ValueError(f"must be a fraction above 0 and at most 1, not {value:g}{hint}")
    return value


Fraction = Annotated[float, AfterValidator(_fraction)]


class QualitySlo(Model):
    dataset: Dataset
    min_pass_rate: Fraction
    window: PositiveDuration | None = None  # default: every run so far


class AvailabilitySlo(Model):
    service: Text  # NAME (in workspace public) or WORKSPACE/NAME
    min: Fraction

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        if not all(NAME_RE.match(part) for part in value.split("/")) or value.count("/") > 1:
            raise ValueError(f"'{value}' is not a service; write NAME (in workspace public) or WORKSPACE/NAME")
        return value

    @property
    def service_id(self) -> str:
        workspace, _, name = self.service.rpartition("/")
        return f"service:{workspace or 'public'}/{name}"


SLO_KINDS = ("freshness", "quality", "availability")


class Slo(Model):
    label = "slo"
    name: Name
    freshness: FreshnessSlo | None = None
    quality: QualitySlo | None = None
    availability: AvailabilitySlo | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Slo":
        given = [kind for kind in SLO_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            fail([((), f"slo '{self.name}' has exactly one of freshness:, quality: or availability:"
                       + (f"; it has {' and '.join(given)}" if given else ""))])
        return self


class DataproductSection(BundleSection):
    domain: Text
    inputs: list[Port] = Field(default_factory=list)
    outputs: list[Port] = Field(default_factory=list)
    slos: list[Slo] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> "DataproductSection":
        errors = duplicates(((("inputs", i, "name"), p.name) for i, p in enumerate(self.inputs)), "input port")
        errors += duplicates(((("outputs", i, "name"), p.name) for i, p in enumerate(self.outputs)), "output port")
        errors += duplicates(((("slos", i, "name"), s.name) for i, s in enumerate(self.slos)), "slo")
        if errors:
            fail(errors)
        return self


class DataproductDocument(Header):
    type: Literal["dataproduct"]
    dataproduct: DataproductSection

    def section_refs(self) -> list[Ref]:
        section = self.dataproduct
        out = [Ref("read", p.dataset, ("dataproduct", "inputs", i, "dataset")) for i, p in enumerate(section.inputs)]
        out += [Ref("read", p.dataset, ("dataproduct", "outputs", i, "dataset"))
                for i, p in enumerate(section.outputs)]
        for i, slo in enumerate(section.slos):
            for kind in ("freshness", "quality"):
                if (target := getattr(slo, kind)) is not None:
                    out.append(Ref("read", target.dataset, ("dataproduct", "slos", i, kind, "dataset")))
            if slo.availability is not None:
                out.append(Ref("resource", slo.availability.service_id,
                               ("dataproduct", "slos", i, "availability", "service")))
        return out
