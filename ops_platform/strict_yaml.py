"""YAML as our configuration files mean it: the safe loader, refusing a key given twice.

PyYAML keeps the last of two equal keys silently (two `target:` lines, the second wins; two
roster entries for one actor, the second wins); every configuration file the platform reads
(SLOs, the actor roster) goes through this loader instead.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(f"key {key!r} appears twice in one mapping (lines {first} and {line})")
        self.key, self.line, self.first = key, line, first


class UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping: YAML keys are unique, and
    PyYAML would otherwise keep the last one silently (two `target:` lines, the second wins).
    Keys a merge (`<<`) brings in may still be overridden, as YAML allows."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise DuplicateKeyError(key, line, seen[key])
                    seen[key] = line
                except TypeError:  # an unhashable key: the safe loader says so itself
                    continue
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 reads `1e1`, `1.44e1` and `1e-3` as numbers; PyYAML (YAML 1.1) wants a dot and a
# signed exponent (`1.0e+1`) and reads the others as strings, so `burnRate: 1e1` was refused
# as "not a number". A mantissa has a digit (`._e1` would reach float() as `.e1` and crash).
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))
