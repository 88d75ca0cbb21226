"""Safe YAML for versioned data files (signals, policies): duplicate keys are errors, and
every mapping remembers its line (``__line__``) so validation errors can say ``file:line``."""

from __future__ import annotations

import yaml

from .errors import ConfigError

LINE = "__line__"


class _Loader(yaml.SafeLoader):
    """Safe loader that rejects duplicate keys and records each mapping's line."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"{loader.name}:{key_node.start_mark.line + 1}: duplicate key "
                              f"'{key}'")
        seen.add(key)
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    mapping[LINE] = node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_with_lines(text: str, name: str):
    """Parse one YAML document; syntax errors become ``ConfigError('name:line: ...')``."""
    loader = _Loader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{name}{line}: invalid YAML: {problem}".replace("\n", " ")) from None
    finally:
        loader.dispose()


def strip_lines(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != LINE}


def _drop_lines(x):
    if isinstance(x, dict):
        return {k: _drop_lines(v) for k, v in x.items() if k != LINE}
    if isinstance(x, list):
        return [_drop_lines(v) for v in x]
    return x


def load_plain(text: str, name: str):
    """Like :func:`load_with_lines` (duplicate keys rejected) without the line markers."""
    return _drop_lines(load_with_lines(text, name))
