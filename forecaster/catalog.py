"""The marketing KPI catalogue (`config/catalog.yaml`): KPI definitions a config can refer to by
name, so a team writes `conversion_rate: {segments: [device]}` instead of the formula.

The file ships in the repository's `config/` and, in a wheel, inside the package as
`forecaster.bundled_config` (see pyproject), like the demo config.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from forecaster.types import BadInputError

CHECKOUT_CONFIG = Path(__file__).resolve().parent.parent / "config"


def bundled_config_text(name: str) -> str:
    """A file of `config/`: from the checkout (editable install) or from the installed wheel."""
    checkout = CHECKOUT_CONFIG / name
    if checkout.exists():
        return checkout.read_text(encoding="utf-8")
    return (resources.files("forecaster.bundled_config") / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, dict[str, Any]]:
    """KPI name -> its catalogue fields (plain dicts; validated with the config that uses them)."""
    raw = yaml.safe_load(bundled_config_text("catalog.yaml"))
    if not isinstance(raw, dict) or not isinstance(raw.get("kpis"), dict):
        raise BadInputError("config/catalog.yaml: expected a mapping `kpis:` of KPI definitions")
    return {str(name): dict(fields) for name, fields in raw["kpis"].items()}


def with_catalog(kpis: dict[str, Any]) -> dict[str, Any]:
    """The config's `kpis:` with each entry laid over its catalogue entry.

    An entry is looked up by `catalog: NAME`, else by its own name; an entry that names neither a
    catalogue KPI nor gives a formula is left for validation to reject. Catalogue `related` KPIs
    are kept only where the config defines them (the user's own `related` must all exist).
    """
    catalog = load_catalog()
    merged: dict[str, Any] = {}
    for name, entry in kpis.items():
        if not isinstance(entry, dict):
            merged[name] = entry
            continue
        base_name = entry.get("catalog", name if "metric" not in entry and "ratio" not in entry else None)
        if base_name is not None and not isinstance(base_name, str):
            raise BadInputError(f"kpis.{name}.catalog: give the name of a catalogue KPI, not {type(base_name).__name__} "
                                f"{str(base_name)[:40]!r}; known: {', '.join(sorted(catalog))}")
        if base_name is None:
            merged[name] = entry
            continue
        if base_name not in catalog:
            if "catalog" in entry:
                raise BadInputError(
                    f"kpis.{name}.catalog: no KPI {base_name!r} in the catalogue; known: {', '.join(sorted(catalog))}"
                )
            merged[name] = entry
            continue
        base = dict(catalog[base_name])
        if "related" not in entry:
            base["related"] = [other for other in base.get("related", []) if other in kpis]
        merged[name] = {**base, **{key: value for key, value in entry.items() if key != "catalog"}}
    return merged
