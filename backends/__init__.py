"""Registry of model families and frameworks.

Nothing here imports torch, paddle or tensorflow: a family's config, presets and weight rules are
framework-free, and `modeling(family, fw)` imports one framework only when a port is asked for.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from pathlib import Path
from types import ModuleType

from ._fw import FRAMEWORKS as FRAMEWORK_REGISTRY  # framework-free data: key -> Framework

# what the user set, read before any framework loads (paddle sets OMP_NUM_THREADS to 1 when it is unset)
USER_THREAD_SETTINGS = any(name in os.environ for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
FRAMEWORKS = tuple(FRAMEWORK_REGISTRY)  # framework keys, in the order a process may import them
# every sub-package of backends/ holding a PyTorch reference (modeling_torch.py) is a family (its __init__
# defines SPEC); the others (checkpoints/, _fw/) are shared machinery
FAMILIES = tuple(sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                        if m.ispkg and (Path(__file__).parent / m.name / "modeling_torch.py").is_file()))
# the config.json key our writers (tasks' model folders, converters) add: the family the config belongs to,
# which its model_type alone may not tell (a DeFormer saved from RoBERTa has model_type "roberta")
FAMILY_KEY = "parity_family"


def family(name: str):
    """The framework-free `FamilySpec` of a family (config class, presets, weight rules)."""
    if name not in FAMILIES:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return importlib.import_module(f"backends.{name}").SPEC


def family_of_config(config: dict, source: str = "config", family_name: str | None = None) -> str | None:
    """The family a config.json dict belongs to: `family_name` when the user chose one (--family), else its
    FAMILY_KEY, else the one family whose config class has its model_type. None when the config names
    neither (the caller may look further, e.g. at "architectures"); ConfigError when it is ambiguous or unknown."""
    from .errors import ConfigError

    chosen, where = (family_name, "--family") if family_name else (config.get(FAMILY_KEY), f"{source}: {FAMILY_KEY}")
    if chosen:
        if chosen not in FAMILIES:
            raise ConfigError(f"{where} {chosen!r} is not a family; known: {', '.join(FAMILIES)}")
        return chosen
    model_type = config.get("model_type")
    if not model_type:
        return None
    matches = [name for name in FAMILIES if family(name).config_class.model_type == model_type]
    if not matches:
        known = sorted({family(name).config_class.model_type for name in FAMILIES})
        raise ConfigError(f"{source}: model_type {model_type!r} is not one of our families' ({', '.join(known)})")
    if len(matches) > 1:
        raise ConfigError(f"{source}: model_type {model_type!r} is the config of families {', '.join(matches)}; "
                          f"say which with --family or a {FAMILY_KEY!r} key")
    return matches[0]


def family_marker(family_name: str) -> dict:
    """What a writer adds to config.json so that family_of_config finds `family_name`: {FAMILY_KEY: name}
    when another family's config has the same model_type, else nothing (transformers' files stay as they are)."""
    model_type = family(family_name).config_class.model_type
    shared = [name for name in FAMILIES if family(name).config_class.model_type == model_type]
    return {FAMILY_KEY: family_name} if len(shared) > 1 else {}


def modeling(family_name: str, fw: str) -> ModuleType:
    """The port of `family_name` in framework `fw` (imports that framework)."""
    return importlib.import_module(f"backends.{family_name}.modeling_{_check_fw(fw)}")


def framework(fw: str) -> ModuleType:
    """The adapter surface of framework `fw` (`backends/_fw/<fw>/__init__.py`, `backends._fw.contract.Adapter`)."""
    return importlib.import_module(f"backends._fw.{_check_fw(fw)}")


def import_framework(fw: str) -> ModuleType:
    """The Python package of framework `fw` itself (torch, paddle, tensorflow), imported."""
    return importlib.import_module(FRAMEWORK_REGISTRY[_check_fw(fw)].package)


def installed_frameworks() -> list[str]:
    """Frameworks whose package is installed, found without importing them."""
    return [fw for fw in FRAMEWORKS if importlib.util.find_spec(FRAMEWORK_REGISTRY[fw].package) is not None]


def presets() -> dict:
    """Every preset of every family: name -> Preset."""
    found = {}
    for name in FAMILIES:
        found.update(family(name).presets)
    return found


def preset(name: str):
    """The preset called `name`, with a one-line error listing the known ones."""
    known = presets()
    if name not in known:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def _check_fw(fw: str) -> str:
    if fw not in FRAMEWORKS:
        raise KeyError(f"unknown framework {fw!r}; known: {', '.join(FRAMEWORKS)}")
    return fw
