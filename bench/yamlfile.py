"""YAML loading that names file and line in every error, for the catalog and the profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import BenchError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """The base of every schema read from YAML (catalog, profiles, claims, run requests): an
    unknown key is an error rather than silently ignored, and a loaded value cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a file with the safe loader; return the data and its node tree (for line numbers)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot read: {exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else "?"
        problem = exc.problem or exc.context or "syntax error"
        raise BenchError(f"{path}:{line}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise BenchError(f"{path}: malformed YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, node


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest node along a pydantic error location."""
    if node is None:
        return None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if str(k.value) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
        else:
            child = None
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def parse_yaml_file(path: Path, model: type[M]) -> M:
    """Load and validate a YAML file against a pydantic model; errors name file and line."""
    data, node = load_yaml(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        line = line_of(node, tuple(first["loc"]))
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise BenchError(f"{path}:{line or '?'}: {where}: {msg}{more}") from None
