"""The prompt corpus shipped with the package (permissively licensed sets only).

See ``data/corpus/ATTRIBUTION.md`` for sources and licences. ``load()`` returns a Polars frame
with columns ``text, source, task, file, turns, system, tools_json``.
"""

from __future__ import annotations

import functools
import io
import json
from importlib import resources

import polars as pl
import zstandard

_DIR = "data/corpus"


def files() -> list[str]:
    root = resources.files("distillguard").joinpath(_DIR)
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".jsonl.zst"))


@functools.lru_cache(maxsize=1)
def load() -> pl.DataFrame:
    """All shipped prompts as one frame (cached; a few MB)."""
    root = resources.files("distillguard").joinpath(_DIR)
    rows = []
    dctx = zstandard.ZstdDecompressor()
    for name in files():
        raw = dctx.stream_reader(io.BytesIO(root.joinpath(name).read_bytes())).read()
        for line in raw.decode().split("\n"):
            if not line.strip():
                continue
            r = json.loads(line)
            rows.append({
                "text": r["text"],
                "source": r["source"],
                "task": r["task"],
                "file": name.removesuffix(".jsonl.zst"),
                "turns": r.get("turns"),
                "system": r.get("system"),
                "tools_json": json.dumps(r["tools"]) if r.get("tools") else None,
            })
    return pl.DataFrame(rows, schema={
        "text": pl.String, "source": pl.String, "task": pl.String, "file": pl.String,
        "turns": pl.List(pl.String), "system": pl.String, "tools_json": pl.String,
    })


def by_file(name: str) -> pl.DataFrame:
    return load().filter(pl.col("file") == name)
