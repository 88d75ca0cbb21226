"""Do two source trees give the same content answers? Classifier and template normalisation.

A speed change to ``content/`` must not move a prediction: for every prompt of the given
logs, each tree (its ``src`` directory first on ``PYTHONPATH``, in a subprocess) writes the
classifier's ``decision_function`` (composed prompt + system + tools, batches of
``--batch``), the CSR arrays of ``transform`` (the training features) and
``normalize_prompts`` of the prompts and system prompts; the two outputs must be equal bit
for bit. Prints the counts compared and each tree's CPU seconds.

    git archive <commit> src | tar -x -C /tmp/before
    .venv/bin/python bench/content_identity.py --before /tmp/before/src --after src \\
        SIM/events SIM2/events ...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WORKER = r"""
import sys, time, hashlib
import numpy as np, polars as pl
from distillguard.content import load_default, normalize_prompts
from distillguard.content.classify import compose_texts
from distillguard.read import read_log
out, batch, logs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
model = load_default()
model.coef_ = np.asfortranarray(model.coef_)      # as the online detector keeps it
dec, norm, digest, n, cpu = [], [], hashlib.sha256(), 0, 0.0
for log in logs:
    with read_log([log]) as lg:
        ev = lg.events
        ev = (ev.collect() if hasattr(ev, "collect") else ev).select(
            "prompt", "system", "tool_names")
    texts = compose_texts(ev["prompt"].fill_null(""), ev["system"], ev["tool_names"])
    t = time.process_time()
    for i in range(0, len(texts), batch):
        b = texts.slice(i, batch)
        dec.append(model.decision_function(b))
        x = model.transform(b)
        for a in (x.indptr, x.indices, x.data):
            digest.update(np.ascontiguousarray(a).tobytes())
    for s in (ev["prompt"], ev["system"].drop_nulls()):
        norm.append(normalize_prompts(s))
    cpu += time.process_time() - t
    n += len(texts)
np.save(out + ".dec.npy", np.concatenate(dec))
pl.DataFrame({"n": pl.concat(norm)}).write_parquet(out + ".norm.parquet")
open(out + ".meta", "w").write(f"{n} {cpu:.2f} {digest.hexdigest()}")
"""


def run(src: Path, out: str, batch: int, logs: list[str]) -> tuple[int, float, str]:
    env = dict(os.environ, PYTHONPATH=str(src.resolve()), POLARS_MAX_THREADS="1")
    subprocess.run([sys.executable, "-c", WORKER, out, str(batch), *logs], env=env,
                   check=True, cwd="/")
    n, cpu, digest = Path(out + ".meta").read_text().split()
    return int(n), float(cpu), digest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=3000, help="texts per classifier call")
    ap.add_argument("logs", nargs="+", help="event logs (files or folders) to take texts from")
    a = ap.parse_args()
    import polars as pl

    with tempfile.TemporaryDirectory(prefix="content-identity-") as tmp:
        res = {k: run(src, f"{tmp}/{k}", a.batch, a.logs)
               for k, src in (("before", a.before), ("after", a.after))}
        dec = [np.load(f"{tmp}/{k}.dec.npy") for k in res]
        norm = [pl.read_parquet(f"{tmp}/{k}.norm.parquet")["n"] for k in res]
        same_dec = dec[0].dtype == dec[1].dtype and np.array_equal(dec[0], dec[1])
        same_norm = norm[0].equals(norm[1])
    (n, cpu_b, dig_b), (_, cpu_a, dig_a) = res["before"], res["after"]
    print(f"{n:,} texts; decision_function bit-identical: {same_dec}; transform identical: "
          f"{dig_b == dig_a}; normalize_prompts identical ({len(norm[0]):,} texts): "
          f"{same_norm}; CPU s before {cpu_b:.2f}, after {cpu_a:.2f}")
    sys.exit(0 if same_dec and same_norm and dig_b == dig_a else 1)


if __name__ == "__main__":
    main()
