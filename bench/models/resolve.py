"""One reading of a model spec, for every command that takes one: ``ID[:VARIANT]`` names a
catalog model (its default variant when none is given), and anything that looks like a file (ends
in ``.gguf``, holds a slash, or exists) is a path to a GGUF file. ``bench run``, ``bench models
fetch|derive``, ``bench predict`` and ``bench serve`` all read specs here, so they agree on which
spec is which.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.models.catalog import Catalog, Model, Variant
    from bench.models.store import ModelStore, ResolvedModel


def is_path(spec: str) -> bool:
    """Whether ``spec`` names a file rather than a catalog model."""
    return spec.endswith(".gguf") or "/" in spec or Path(spec).is_file()


def split_spec(spec: str) -> tuple[str, str | None]:
    """``ID[:VARIANT]`` -> (model id, variant id or None for the model's default)."""
    model_id, _, variant_id = spec.partition(":")
    return model_id, variant_id or None


def lookup(catalog: Catalog, spec: str) -> tuple[Model, Variant]:
    """The catalog model and variant ``ID[:VARIANT]`` names (a clear error for an unknown one)."""
    model_id, variant_id = split_spec(spec)
    model = catalog.model(model_id)
    return model, model.variant(variant_id)


def check_format(model: Model, variant: Variant, formats: Collection[str], loader: str) -> None:
    """A variant ``loader`` cannot load (``formats`` are the ones it can) is bad input."""
    if variant.format not in formats:
        raise BenchError(f"{model.id}:{variant.id} is {variant.format}; {loader} loads {', '.join(formats)}")


def open_catalog(catalog_path: Path, store: ModelStore) -> Catalog:
    """The catalog, with ``store`` reading its relative paths from the catalog's folder."""
    from bench.models.catalog import load_catalog

    catalog = load_catalog(catalog_path)
    store.base_dir = catalog_path.parent.resolve()
    return catalog


def resolve_spec(spec: str | None, catalog_path: Path, store: ModelStore, *, formats: Collection[str] = (),
                 loader: str = "") -> tuple[ResolvedModel, Model | None]:
    """The file ``spec`` names, fetched and verified, and its catalog model (None for a path).
    No ``spec``: the catalog's default model. With ``formats``, a catalog variant in another format
    is refused as one ``loader`` cannot load."""
    if spec is None:
        from bench.models.catalog import load_catalog

        spec = load_catalog(catalog_path).default_model
    if is_path(spec):
        return store.resolve_path(Path(spec)), None
    model, variant = lookup(open_catalog(catalog_path, store), spec)
    if formats:
        check_format(model, variant, formats, loader)
    return store.resolve(model, variant), model
