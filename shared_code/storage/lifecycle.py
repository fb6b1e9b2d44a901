"""The archive account's lifecycle policy: online tiers for everything, the offline Archive tier for data files only.

Pure: names in, policy out. Why it is built from the archived tables: on a hierarchical-namespace account a lifecycle
rule filters by `prefixMatch` alone (no blob index tags, no exclusions; at most 10 prefixes per rule and 100 rules
per policy, each prefix starting with the container). A rule over the whole lake would also take the Delta log
(`_delta_log/`, its checkpoints, `_last_checkpoint`) and the manifests offline, and then no reader can open the table.
Data files, and only they, live under a partition folder (`year=` for time, `range_start=` for integer time; see
layout.py), so one prefix per table and partition kind names them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Every partition folder a data file can be in (partitioning.py): the offline rules name these and nothing else.
DATA_FOLDER_PREFIXES = ("year=", "range_start=")
MAX_PREFIXES_PER_RULE = 10
MAX_RULES = 100
ONLINE_RULE = "tsarchive-online-tiers"
REHYDRATED_ONLINE_DAYS = 30  # a rehydrated data file stays online this long before the rule may archive it again
OFFLINE_RULE = "tsarchive-offline-data-{:02d}"


@dataclass(frozen=True)
class TierDays:
    """Days after a blob's last modification; 0 leaves that tier out. Archive (offline) is 0 unless opted in."""

    cool: int = 30
    cold: int = 90
    archive: int = 0


def offline_prefixes(lake_root: str, table_dirs: list[str]) -> list[str]:
    """The prefixes of every data file of these tables: `<container>/<prefix>/<schema>.<table>/year=` and so on."""
    root = lake_root.strip("/")
    return [f"{root}/{table.strip('/')}/{folder}" for table in sorted(set(table_dirs)) for folder in DATA_FOLDER_PREFIXES]


def policy(lake_root: str, days: TierDays, table_dirs: list[str]) -> dict[str, Any]:
    """The management policy (the `policy` object of Microsoft.Storage/storageAccounts/managementPolicies)."""
    if days.archive and days.archive <= max(days.cool, days.cold):
        raise ValueError("the Archive tier must come after Cool and Cold (archive days > cool and cold days)")
    online: dict[str, Any] = {}
    if days.cool:
        online["tierToCool"] = {"daysAfterModificationGreaterThan": days.cool}
    if days.cold:
        online["tierToCold"] = {"daysAfterModificationGreaterThan": days.cold}
    rules = []
    if online:
        rules.append(_rule(ONLINE_RULE, [f"{lake_root.strip('/')}/"], online))
    if days.archive:
        prefixes = offline_prefixes(lake_root, table_dirs)
        groups = [prefixes[i:i + MAX_PREFIXES_PER_RULE] for i in range(0, len(prefixes), MAX_PREFIXES_PER_RULE)]
        if len(groups) + len(rules) > MAX_RULES:
            raise ValueError(f"{len(table_dirs)} tables need {len(groups)} offline rules; a policy holds {MAX_RULES}")
        # A rehydrated blob keeps its old modification time: without the tier-change condition the rule would
        # take it offline again the next day, in the middle of an audit.
        offline = {"tierToArchive": {"daysAfterModificationGreaterThan": days.archive,
                                     "daysAfterLastTierChangeGreaterThan": REHYDRATED_ONLINE_DAYS}}
        rules += [_rule(OFFLINE_RULE.format(n + 1), group, offline) for n, group in enumerate(groups)]
    return {"rules": rules}


def _rule(name: str, prefixes: list[str], actions: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "enabled": True, "type": "Lifecycle",
            "definition": {"filters": {"blobTypes": ["blockBlob"], "prefixMatch": prefixes},
                           "actions": {"baseBlob": actions}}}


# What the service does with a policy, for checking one against real blob names.
_TIER_COST_ORDER = ("tierToCool", "tierToCold", "tierToArchive")  # when several rules match, the cheapest tier wins


def tiers_for(policy_doc: dict[str, Any], blob_name: str) -> dict[str, int]:
    """For a blob named `<container>/<path>`: each tier action a policy would apply to it, with its days."""
    found: dict[str, int] = {}
    for rule in policy_doc.get("rules", []):
        if not rule.get("enabled", True):
            continue
        filters = rule["definition"]["filters"]
        if "blockBlob" not in filters.get("blobTypes", []):
            continue
        if not any(blob_name.startswith(prefix) for prefix in filters.get("prefixMatch", [""])):
            continue
        for action, spec in rule["definition"]["actions"].get("baseBlob", {}).items():
            if action in _TIER_COST_ORDER:
                days = spec["daysAfterModificationGreaterThan"]
                found[action] = min(days, found.get(action, days))
    return found


def is_offline_tier(actions: dict[str, int]) -> bool:
    return "tierToArchive" in actions
