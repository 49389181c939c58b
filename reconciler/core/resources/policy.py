"""`type: policy`: access, masking and row filters for subjects on dataset patterns."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .common import DatasetGlob, Header, Model, Text, fail


class Subjects(Model):
    groups: list[Text] = Field(default_factory=list)  # "*" means everyone
    users: list[Text] = Field(default_factory=list)

    @model_validator(mode="after")
    def _someone(self) -> "Subjects":
        if not self.groups and not self.users:
            fail([((), 'subjects names nobody; list groups or users ("*" means everyone)')])
        return self


class MaskRule(Model):
    columns: list[Text] | None = Field(None, min_length=1)
    tags: list[Text] | None = Field(None, min_length=1)
    with_: Literal["hash", "redact", "null", "last4"] = Field(alias="with")

    @model_validator(mode="after")
    def _columns_or_tags(self) -> "MaskRule":
        if (self.columns is None) == (self.tags is None):
            fail([((), "a mask rule picks columns by exactly one of columns: [...] or tags: [...]")])
        return self


class PolicySection(Model):
    subjects: Subjects
    datasets: list[DatasetGlob] = Field(min_length=1)
    access: Literal["allow", "deny"] | None = None  # omitted: the policy only masks or filters
    mask: list[MaskRule] = Field(default_factory=list)
    filter: Text | None = None  # a SQL row predicate

    @model_validator(mode="after")
    def _does_something(self) -> "PolicySection":
        if self.access is None and not self.mask and self.filter is None:
            fail([((), "the policy does nothing; give at least one of access: allow|deny, mask: [...] "
                       "or filter: \"<row predicate>\"")])
        return self


class PolicyDocument(Header):
    type: Literal["policy"]
    policy: PolicySection
