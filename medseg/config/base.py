"""Pipeline configs: YAML files validated by pydantic.

A config is a YAML mapping validated against a :class:`PipelineConfig` subclass chosen by its
``task`` key. Unknown keys and bad values are :class:`medseg.errors.ConfigError` whose message
names the file, the key, what is allowed and, for near misses, a "did you mean" suggestion.
Every pipeline accepts ``--set section.key=value`` overrides (values parsed as YAML).

Data lists follow the MONAI / Medical Segmentation Decathlon datalist JSON convention::

    {"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, ...],
     "validation": [...], "test": ["imagesTs/b.nii.gz", ...]}

Relative paths in a config are resolved against the config file's folder; relative paths in a
datalist against ``data.root`` (default: the datalist's folder), as MONAI's
``load_decathlon_datalist`` does.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from medseg.errors import ConfigError, MedsegError, MissingFileError

__all__ = [
    "Section",
    "DataSection",
    "check_one_source",
    "ModelSection",
    "TrainSection",
    "InferSection",
    "PipelineConfig",
    "register_task",
    "task_config_class",
    "load_config",
    "parse_config",
    "apply_overrides",
    "safe_yaml",
    "MAX_YAML_NODES",
    "config_to_yaml",
    "config_hash",
    "load_datalist",
    "read_datalist_json",
    "resolve_paths",
    "format_validation_error",
]

#: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (GPU number N as CUDA numbers them; see docs/install.md)
Device = str


#: what ``train.compile`` / ``infer.compile`` do (medseg.engine.compiled)
_COMPILE_HELP = (
    "run the network through torch.compile (Inductor: C++ on CPU, Triton on CUDA); the first call pays the "
    "compilation (tens of seconds to minutes), later calls are faster where it helps; when compiling fails the "
    "network runs eagerly (one warning, same results); run.json records whether it was used"
)


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class DataSection(Section):
    """Where the data is. ``datalist`` is an MSD-style JSON; ``root`` the base of its paths."""

    datalist: Path | None = Field(None, description="MSD/MONAI datalist JSON file")
    root: Path | None = Field(None, description="base folder of datalist paths (default: datalist's folder)")
    synthetic: bool = Field(False, description="generate the embedded synthetic data instead of reading files")
    num_cases: int = Field(12, ge=1, description="number of synthetic cases to generate")
    val_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="fraction held out when the datalist has no 'validation'"
    )
    num_workers: int = Field(0, ge=0)
    folds: int | None = Field(
        None,
        ge=2,
        description="K-fold cross-validation over the training (+ validation) cases: `medseg train --fold k|all` "
        "trains the folds into one parent run (see docs/model-selection.md)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        check_one_source(self)
        return self


def check_one_source(data: BaseModel) -> None:
    """``data.synthetic: true`` and a ``data.datalist`` together are an error: the run would silently
    train on one while its record named the other (choose one)."""
    if getattr(data, "synthetic", False) and getattr(data, "datalist", None) is not None:
        raise ValueError(
            "data.synthetic is true and data.datalist is set: choose one (data.synthetic: false to train "
            "on the datalist, or remove data.datalist to train on the generated synthetic data)"
        )


class ModelSection(Section):
    """Network choice: ``name`` from the model registry plus that model's own parameters.

    Extra keys are passed to the model builder, which validates them against its signature
    (an unknown parameter is a ConfigError naming the allowed ones).
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True, protected_namespaces=())
    name: str = "unet"


class TrainSection(Section):
    """Optimisation settings shared by every task."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    scheduler: Literal["cosine", "poly", "none"] = "cosine"
    max_minutes: float | None = Field(None, gt=0, description="stop training after this wall time")
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    early_stop_patience: int | None = Field(None, ge=1, description="validations without improvement before stopping")
    grad_clip: float | None = Field(1.0, gt=0)
    amp: bool = Field(True, description="automatic mixed precision (CUDA only; ignored on CPU)")
    compile: bool = Field(False, description=_COMPILE_HELP)
    steps_per_epoch: int | None = Field(None, ge=1)


class InferSection(Section):
    """Inference settings shared by every task (each task's own section adds what it reads)."""

    batch_size: int = Field(4, ge=1)


class PipelineConfig(Section):
    """Fields every pipeline config has. Subclasses add task sections."""

    task: str
    name: str = Field("run", description="run name: the run folder is <output_dir>/<name>")
    output_dir: Path = Path("runs")
    seed: int = 0
    device: Device = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise PydanticCustomError(
            "literal_error",
            "Input should be 'auto', 'cpu', 'cuda' or 'cuda:N'",
            {"expected": "'auto', 'cpu', 'cuda' or 'cuda:N' (N: GPU number)"},
        )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or "\\" in v or v in {".", ".."}:
            raise ValueError("must be a plain folder name (no '/', '\\', '.' or '..')")
        return v


_TASKS: dict[str, type[PipelineConfig]] = {}


def register_task(name: str):
    """Class decorator registering a :class:`PipelineConfig` subclass for ``task: name``."""

    def deco(cls: type[PipelineConfig]) -> type[PipelineConfig]:
        _TASKS[name] = cls
        return cls

    return deco


def task_config_class(task: str, source: str = "<config>") -> type[PipelineConfig]:
    """The config class registered for ``task``; ConfigError listing the tasks otherwise."""
    if task not in _TASKS:
        raise ConfigError(
            f"unknown task {task!r}{_did_you_mean(task, _TASKS)}. Allowed tasks: {', '.join(sorted(_TASKS))}.",
            source,
        )
    return _TASKS[task]


# ----------------------------------------------------------------------------- loading


def load_config(
    path: str | Path,
    overrides: typing.Sequence[str] = (),
    cls: type[PipelineConfig] | None = None,
) -> PipelineConfig:
    """Read a YAML config, apply ``--set`` overrides, validate, resolve relative paths.

    Parameters
    ----------
    path : YAML file.
    overrides : ``"section.key=value"`` strings; values are parsed as YAML (``3``, ``true``, ``[1,2]``).
    cls : config class; default: chosen by the file's ``task`` key.

    Raises
    ------
    MissingFileError if the file does not exist; ConfigError for any invalid content.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError("config file not found (check the path)", path)
    raw = safe_yaml(path.read_text(), str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a YAML mapping, got {type(raw).__name__}", path)
    raw = apply_overrides(raw, overrides, source=str(path))
    cfg = parse_config(raw, source=str(path), cls=cls)
    return resolve_paths(cfg, base=path.parent, source=str(path))


def parse_config(raw: dict, source: str = "<config>", cls: type[PipelineConfig] | None = None) -> PipelineConfig:
    """Validate a config mapping (already loaded from YAML)."""
    if cls is None:
        task = raw.get("task")
        if task is None:
            raise ConfigError(f"missing required key 'task'. Allowed tasks: {', '.join(sorted(_all_tasks()))}.", source)
        cls = task_config_class(str(task), source)
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, cls, source), source) from None


def _all_tasks() -> list[str]:
    return list(_TASKS)


#: the most YAML nodes a config (or a ``--set`` value) may have once its aliases are expanded: an
#: "alias bomb" (a few hundred bytes whose anchors expand to billions of nodes) is a ConfigError
MAX_YAML_NODES = 100_000


def safe_yaml(text: str, source: str = "<config>") -> Any:
    """``yaml.safe_load(text)``, refusing documents whose aliases expand to more than :data:`MAX_YAML_NODES` nodes.

    The node graph is composed first (aliases are shared references there, so this is cheap) and its
    expanded size counted with one visit per node; recursive aliases are refused too. Only then is
    the document built.

    Raises
    ------
    ConfigError : invalid YAML, recursive aliases, or too many nodes after alias expansion.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source) from None
    if node is None:
        return None
    n = _expanded_nodes(node, {}, set(), source)
    if n > MAX_YAML_NODES:
        raise ConfigError(
            f"YAML aliases (*name) expand to {n:,} nodes, over the limit of {MAX_YAML_NODES:,}; a config is a few "
            "hundred keys (is this file an alias bomb?)",
            source,
        )
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source) from None


def _expanded_nodes(node: yaml.Node, memo: dict[int, int], active: set[int], source: str) -> int:
    """Nodes under ``node`` with aliases expanded (each distinct node visited once: ``memo``)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ConfigError("recursive YAML alias (a node that contains itself)", source)
    active.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_nodes(v, memo, active, source) for v in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(
            _expanded_nodes(k, memo, active, source) + _expanded_nodes(v, memo, active, source) for k, v in node.value
        )
    active.discard(key)
    memo[key] = total
    return total


def _plain(obj: Any, memo: dict[int, Any]) -> Any:
    """A copy of a YAML/JSON-like value as JSON would round-trip it (keys as text, other scalars via str),
    in time proportional to its distinct objects: shared references (YAML aliases) stay shared."""
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, dict):
        out: Any = {}
        memo[id(obj)] = out
        for k, v in obj.items():
            out[
                k if isinstance(k, str) else json.dumps(k) if isinstance(k, (int, float, bool)) or k is None else str(k)
            ] = _plain(v, memo)
        return out
    if isinstance(obj, (list, tuple)):
        out = []
        memo[id(obj)] = out
        out.extend(_plain(v, memo) for v in obj)
        return out
    return str(obj)


def apply_overrides(raw: dict, overrides: typing.Sequence[str], source: str = "<config>") -> dict:
    """Apply ``a.b.c=value`` overrides to a nested mapping (a copy); values parsed as YAML.

    The copy takes time proportional to the mapping's distinct objects (aliases are not expanded);
    the sections an override changes are copied first, so a YAML alias elsewhere keeps its value.
    """
    out = _plain(raw, {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value", source)
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r} has an empty key", source)
        try:
            parsed = safe_yaml(value, source) if value.strip() else ""
        except ConfigError as e:
            if not str(e).startswith(f"{source}: not valid YAML"):
                raise  # an alias bomb in a --set value is refused like one in the file
            parsed = value
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is not None and not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is a value, not a section", source)
            nxt = node[p] = dict(nxt or {})  # a copy: the same section reached through an alias is unchanged
            node = nxt
        node[parts[-1]] = parsed
    return out


def resolve_paths(cfg: PipelineConfig, base: Path, source: str = "<config>", check: bool = True) -> PipelineConfig:
    """Make relative Path fields absolute against ``base`` (in place); with ``check``, input files must exist."""

    def visit(model: BaseModel, where: str) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            key = f"{where}{name}"
            if isinstance(value, Path):
                if not value.is_absolute():
                    value = (base / value).resolve()
                    object.__setattr__(model, name, value)
                must_exist = (
                    (field.json_schema_extra or {}).get("must_exist", False)
                    if isinstance(field.json_schema_extra, dict)
                    else False
                )
                if check and (must_exist or name in {"datalist", "checkpoint"}) and not value.exists():
                    raise ConfigError(f"{key!r} points to a missing file: {value}", source)
            elif isinstance(value, BaseModel):
                visit(value, key + ".")

    visit(cfg, "")
    return cfg


# ----------------------------------------------------------------------------- errors


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    m = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {m[0]!r}?)" if m else ""


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            m = _unwrap_model(arg)
            if m is not None:
                return m
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = cls
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _unwrap_model(model.model_fields[part].annotation)
    return model


def format_validation_error(err: ValidationError, cls: type[BaseModel], source: str) -> str:
    """Turn pydantic's error list into one readable paragraph."""
    parts = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        key = ".".join(str(x) for x in loc) or "<top level>"
        typ = e["type"]
        if typ == "extra_forbidden":
            parent = _model_at(cls, loc[:-1])
            allowed = list(parent.model_fields) if parent is not None else []
            section = ".".join(str(x) for x in loc[:-1]) or "the top level"
            hint = _did_you_mean(str(loc[-1]), allowed)
            parts.append(f"unknown key {key!r}{hint}; allowed keys in {section}: {', '.join(allowed)}")
        elif typ == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            got = e.get("input")
            hint = ""
            if isinstance(got, str):
                choices = [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",")]
                hint = _did_you_mean(got, [c for c in choices if c])
            parts.append(f"{key!r} = {got!r} is not allowed{hint}; allowed values: {expected}")
        elif typ == "missing":
            parts.append(f"missing required key {key!r}")
        else:
            parts.append(f"{key!r} = {e.get('input')!r}: {e['msg']}")
    return "invalid config: " + "; ".join(parts) + ". Fix the YAML file or the --set override."


# ----------------------------------------------------------------------------- saving


def config_to_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML text (paths as strings), as saved in the run folder."""
    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)


def config_hash(cfg: BaseModel) -> str:
    """SHA-256 (first 16 hex digits) of the resolved config's canonical JSON."""
    text = json.dumps(json.loads(cfg.model_dump_json()), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_datalist_json(path: str | Path, error: type[MedsegError] = ConfigError) -> dict[str, Any]:
    """The content of a datalist JSON file (a mapping), or a clear error naming the file.

    ``error`` is the class raised for invalid content: ``ConfigError`` for a config's
    ``data.datalist``, ``InputError`` for a datalist given as a command-line input.
    Raises MissingFileError when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError("datalist not found", path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"datalist is not valid JSON ({type(e).__name__}: {e})", path) from None
    if not isinstance(content, dict):
        raise error("a datalist must be a JSON object with 'training' / 'validation' / 'test' lists", path)
    return content


def load_datalist(path: str | Path, root: str | Path | None = None, key: str = "training") -> list[dict]:
    """Read one list from an MSD-style datalist JSON, with paths made absolute.

    Uses MONAI's ``load_decathlon_datalist`` and checks that every referenced file exists.

    Returns
    -------
    list of dicts with absolute ``image`` (and ``label`` ...) paths, in file order.

    Raises
    ------
    MissingFileError (file or a referenced case missing), ConfigError (bad JSON or key).
    """
    from monai.data import load_decathlon_datalist  # heavy (torch): imported only when a datalist is read

    path = Path(path)
    content = read_datalist_json(path)
    if key not in content:
        raise ConfigError(
            f"datalist has no {key!r} list{_did_you_mean(key, content)}; keys present: {', '.join(content)}", path
        )
    items = load_decathlon_datalist(path, is_segmentation=True, data_list_key=key, base_dir=str(root) if root else None)
    for i, item in enumerate(items):
        for k, v in item.items():
            for one in v if k == "image" and isinstance(v, list) else [v]:  # a list: one file per channel
                if k in {"image", "label"} and isinstance(one, str) and not Path(one).exists():
                    raise MissingFileError(f"datalist entry {key}[{i}] {k!r} refers to a missing file: {one}", path)
    return items
