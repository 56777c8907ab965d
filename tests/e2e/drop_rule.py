"""A helm post-renderer for the RBAC tests: the chart's manifests minus one RBAC rule.

Usage (through a wrapper script, helm runs an executable): `drop_rule.py GROUP RESOURCE`, manifests
on stdin, changed manifests on stdout. Every (Cluster)Role loses the rule(s) granting RESOURCE in
GROUP (`""` is the core group); a rule naming other resources too keeps those.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml


def drop(doc: dict[str, Any], group: str, resource: str) -> int:
    dropped = 0
    kept: list[dict[str, Any]] = []
    for rule in doc.get("rules") or []:
        if group in rule.get("apiGroups", []) and resource in rule.get("resources", []):
            dropped += 1
            rest = [r for r in rule["resources"] if r != resource]
            if rest:
                kept.append({**rule, "resources": rest})
            continue
        kept.append(rule)
    doc["rules"] = kept
    return dropped


def main() -> None:
    group, resource = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(sys.stdin.read()) if d]
    dropped = sum(
        drop(d, group, resource) for d in docs if d.get("kind") in ("ClusterRole", "Role")
    )
    if not dropped:
        sys.exit(f"drop_rule: no rule grants {group}/{resource}")
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))


if __name__ == "__main__":
    main()
