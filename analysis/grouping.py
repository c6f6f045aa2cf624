"""Group runs that differ only by seed, and say which config keys separate those that don't.

A group is (task, dataset, backbone, recipe):

- backbone: the whole backbone config except ``pretrained`` (a path, compared as set / not set
  within the recipe) and implementation-only keys (``impl``, ``*_impl``: same maths, other
  kernels), so new backbone keys (``pointwise: {...}``, ``expand_first_block``) group by
  themselves;
- recipe: every other key of the stored config except the seed, paths and output folders,
  loader workers, and logger / callback / progress settings. Runs whose recipes differ are never
  averaged together; the keys that differ label them.

Values are compared resolved, so ``trainer.max_epochs: 20`` given on the command line and
``trainer.max_epochs: ${synthetic.max_epochs}`` that resolves to 20 are the same recipe. Values
that interpolate the seed (``data.seed: ${seed}``) or the backbone (``model.backbone:
${backbone}``) are left to those, and a value that resolves only inside a Hydra run
(``${hydra:...}``) is compared as stored.
"""
from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from analysis.runs import Run

# Config keys that do not change what is learned or measured.
RUNTIME_KEYS = ("seed", "ckpt_path", "test", "compile", "channels_last")
RUNTIME_PREFIXES = ("paths.", "logger.", "callbacks.", "hydra.")
RUNTIME_LEAVES = ("num_workers", "pin_memory", "persistent_workers", "root", "default_root_dir",
                  "dirpath", "save_dir", "output_dir", "log_every_n_steps", "enable_progress_bar",
                  "enable_model_summary", "refresh_rate")
EXPANSION_KEYS = ("expansion", "expand_ratio", "expansion_factor")
_EXPANSION_SUFFIX = re.compile(r"_e(\d+)$")
ABSENT = "<absent>"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# A stored value that interpolates the seed (data.seed: ${seed}) or the backbone
# (model.backbone: ${backbone}): covered by the seed and the backbone identity.
_FOLLOWS_SEED_OR_BACKBONE = re.compile(r"\$\{(seed|backbone)[.}]")


def is_runtime_key(key: str) -> bool:
    """True for a dotted config key that is not part of a recipe."""
    return (key in RUNTIME_KEYS or key.startswith(RUNTIME_PREFIXES)
            or key.rsplit(".", 1)[-1] in RUNTIME_LEAVES)


def is_implementation_key(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    return leaf == "impl" or leaf.endswith("_impl")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists and other leaves are kept as JSON text so that
    they compare and hash."""
    if isinstance(tree, Mapping) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(tree, sort_keys=True, default=str)}


# Backbone keys holding a layer spec {name, **options}, and the config group of their layers.
LAYER_SPEC_GROUPS = {"pointwise": "pointwise", "se_pointwise": "pointwise", "spatial": "spatial"}


def backbone_identity(backbone: Mapping[str, Any]) -> dict[str, Any]:
    """The flat backbone keys that make it another model (not pretrained, not impl)."""
    backbone = {k: (layer_spec_identity(LAYER_SPEC_GROUPS[k], v) if k in LAYER_SPEC_GROUPS else v)
                for k, v in dict(backbone).items()}
    return {k: v for k, v in flatten(backbone).items()
            if k != "pretrained" and not is_implementation_key(k)}


def layer_spec_identity(group: str, spec: Any) -> Any:
    """A layer spec with every option the layer's file in ``configs/backbone/<group>/`` lists (its
    defaults) and null options dropped (null = the default), so runs stored before the config
    groups (every option of every layer listed, null) and after (the chosen layer's options,
    defaults written out) compare equal."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        return spec
    return {**_layer_defaults(group, spec["name"]),
            **{k: v for k, v in spec.items() if v is not None}}


@functools.lru_cache(maxsize=None)
def _layer_defaults(group: str, name: str) -> dict[str, Any]:
    path = CONFIG_DIR / "backbone" / group / f"{name}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}


def recipe(run: Run) -> dict[str, Any]:
    """The flat recipe keys of a run, values resolved (as JSON text)."""
    raw = flatten(OmegaConf.to_container(run.config, resolve=False))
    keys = {}
    for key, value in raw.items():
        if (is_runtime_key(key) or is_implementation_key(key) or key == "task_name"
                or key.startswith("backbone.") or _FOLLOWS_SEED_OR_BACKBONE.search(value)):
            continue
        keys[key] = _resolved_text(run, key, value)
    pretrained = run.backbone.get("pretrained")
    keys["backbone.pretrained"] = json.dumps("checkpoint" if pretrained else None)
    return keys


@functools.lru_cache(maxsize=None)
def backbone_defaults(name: str) -> dict[str, Any]:
    """The flat identity keys of ``configs/backbone/<name>.yaml`` ({} for a backbone without one)."""
    if not (CONFIG_DIR / "backbone" / f"{name}.yaml").is_file():
        return {}
    # Composed by Hydra: the file's defaults list picks its layers (configs/backbone/pointwise/...).
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        backbone = compose(config_name=f"backbone/{name}")["backbone"]
    return backbone_identity(OmegaConf.to_container(backbone, resolve=True))


def _resolved_text(run: Run, key: str, raw: str) -> str:
    """The resolved value of ``key`` as JSON text; the stored text if it does not resolve here."""
    try:
        node = OmegaConf.select(run.config, key, throw_on_resolution_failure=True)
        if OmegaConf.is_config(node):
            node = OmegaConf.to_container(node, resolve=True)
        return json.dumps(node, sort_keys=True, default=str)
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...}, which resolves only inside a run
        return raw


def family(backbone: Mapping[str, Any]) -> str:
    """``cog_e2`` -> ``cog``: the backbone name without its expansion suffix."""
    return _EXPANSION_SUFFIX.sub("", str(backbone.get("name", "")))


def expansion(backbone: Mapping[str, Any]) -> int | None:
    """The expansion factor: a backbone key if there is one, else the name's ``_eN`` suffix."""
    for key in EXPANSION_KEYS:
        if isinstance(backbone.get(key), int):
            return int(backbone[key])
    match = _EXPANSION_SUFFIX.search(str(backbone.get("name", "")))
    return int(match.group(1)) if match else None


def pointwise_name(backbone: Mapping[str, Any]) -> str | None:
    pointwise = backbone.get("pointwise")
    return str(pointwise["name"]) if isinstance(pointwise, Mapping) and "name" in pointwise else None


def selects(backbone: Mapping[str, Any], selector: str) -> bool:
    """Whether ``--baseline/--candidate selector`` names this backbone: its full name
    (``mv2_e2``), its family (``mv2``) or its pointwise layer's name (``cog``)."""
    return selector in (backbone.get("name"), family(backbone), pointwise_name(backbone))


@dataclass
class Group:
    """Runs of one task, dataset, backbone and recipe: the same experiment over seeds."""

    task: str
    dataset: str
    backbone: dict[str, Any]  # resolved backbone config of the first run
    identity: tuple[tuple[str, Any], ...]
    recipe: tuple[tuple[str, Any], ...]
    runs: list[Run] = field(default_factory=list)
    label: str = ""         # backbone name, plus the keys telling same-named backbones apart
    recipe_label: str = ""  # the keys telling this recipe from the dataset's other recipes

    @property
    def setting(self) -> str:
        """The dataset, with the recipe label when the dataset has several recipes."""
        return f"{self.dataset} [{self.recipe_label}]" if self.recipe_label else self.dataset

    def values(self, metric: str) -> list[float]:
        return [run.value(metric) for run in self.runs]

    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    def by_seed(self, metric: str) -> dict[int, float]:
        """``metric`` per seed; a seed run more than once contributes the mean of its runs."""
        collected: dict[int, list[float]] = defaultdict(list)
        for run in self.runs:
            collected[run.seed].append(run.value(metric))
        return {seed: sum(v) / len(v) for seed, v in sorted(collected.items())}


def group_runs(runs: Iterable[Run]) -> tuple[list[Group], list[str]]:
    """Groups of usable runs, and notes naming the keys that kept runs apart."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        identity = tuple(sorted(backbone_identity(run.backbone).items()))
        steps = tuple(sorted(recipe(run).items()))
        key = (run.task, run.dataset, identity, steps)
        if key not in groups:
            groups[key] = Group(run.task, run.dataset, run.backbone, identity, steps)
        groups[key].runs.append(run)
    ordered = sorted(groups.values(), key=_order)
    _label_backbones(ordered)
    notes = _label_recipes(ordered)
    for group in ordered:
        repeated = sorted({s for s in group.seeds() if group.seeds().count(s) > 1})
        if repeated:
            notes.append(f"{group.task} · {group.setting} · {group.label}: seed(s) "
                         f"{', '.join(map(str, repeated))} ran more than once; every run counts "
                         "in the mean, paired differences use the mean per seed")
    return ordered, notes


def _order(group: Group) -> tuple:
    return (group.task, group.dataset, family(group.backbone), expansion(group.backbone) or 0,
            group.identity, group.recipe)


def differing_keys(mappings: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys whose value is not the same in every mapping (missing counts as a value)."""
    keys = sorted({k for m in mappings for k in m})
    return [k for k in keys if len({m.get(k, ABSENT) for m in mappings}) > 1]


def _describe(mapping: Mapping[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={_show(mapping.get(k, ABSENT))}" for k in keys)


def _show(value: Any) -> str:
    if value == ABSENT:
        return ABSENT
    shown = json.loads(value)
    return "null" if shown is None else str(shown)


def _label_backbones(groups: Sequence[Group]) -> None:
    identities: dict[str, dict[tuple, dict[str, Any]]] = defaultdict(dict)
    for group in groups:
        identities[str(group.backbone.get("name"))][group.identity] = dict(group.identity)
    for group in groups:
        name = str(group.backbone.get("name"))
        keys = differing_keys(list(identities[name].values()))
        group.label = f"{name} ({_describe(dict(group.identity), keys)})" if keys else name


def _label_recipes(groups: Sequence[Group]) -> list[str]:
    notes = []
    recipes: dict[tuple[str, str], dict[tuple, dict[str, Any]]] = defaultdict(dict)
    for group in groups:
        recipes[(group.task, group.dataset)][group.recipe] = dict(group.recipe)
    for (task, dataset), found in recipes.items():
        keys = differing_keys(list(found.values()))
        for group in groups:
            if (group.task, group.dataset) == (task, dataset) and keys:
                group.recipe_label = _describe(dict(group.recipe), keys)
        if keys:
            notes.append(f"{task} · {dataset}: {len(found)} recipes, never averaged together; "
                         f"they differ in {', '.join(keys)}")
    return notes


def comparable_pairs(groups: Sequence[Group], baseline: str, candidate: str
                     ) -> list[tuple[Group, Group]]:
    """(baseline, candidate) groups of the same task, dataset and recipe whose backbones agree
    in everything but what the two selectors name.

    Family or pointwise selectors (``mv2`` / ``cog``) pair backbones of the same expansion
    factor; two full names (``mv2_e2`` / ``cog_e4``) pair exactly those backbones.
    """
    names = {str(g.backbone.get("name")) for g in groups}
    by_name = baseline in names and candidate in names
    ignored = {"name"} | ({"pointwise"} if not by_name else {"pointwise", *EXPANSION_KEYS})

    def match_key(group: Group) -> tuple:
        # What the run changed from its backbone's own config: mv2_e2 and cog_e2 differ in every
        # setting that defines their families, and as configured they are the pair to compare.
        defaults = backbone_defaults(str(group.backbone.get("name")))
        rest = tuple((k, v) for k, v in group.identity
                     if k.split(".", 1)[0] not in ignored and defaults.get(k, ABSENT) != v)
        factor = None if by_name else expansion(group.backbone)
        return group.task, group.dataset, group.recipe, factor, rest

    def chosen(group: Group, selector: str) -> bool:
        return (group.backbone.get("name") == selector) if by_name else selects(group.backbone, selector)

    pairs = []
    for base in groups:
        if not chosen(base, baseline):
            continue
        for cand in groups:
            if cand is not base and chosen(cand, candidate) and match_key(cand) == match_key(base):
                pairs.append((base, cand))
    return pairs
