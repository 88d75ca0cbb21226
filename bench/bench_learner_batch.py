"""Learner cost per record by batch size (the decision service's ``--learn-interval`` choice).

    python bench/bench_learner_batch.py --sizes 200,500,1000,2000

Learns the first 30,000 decision requests of the load test's request mix (the simulated
``demo`` log, seed 1, in time order; see ``loadtest_decide.py``) through the service's
``Publisher`` (contract normalisation, ``learn_many``, ``score_many`` of due accounts, changed
rows) in batches of each size, on a fresh detector each time, and prints the CPU time per
record (process time: polars' worker threads included) and the rows published per record.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import orjson

from distillguard.serve.engine import Publisher
from distillguard.stream.online import OnlineDetector
from loadtest_decide import request_bodies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="200,500,1000,2000")
    ap.add_argument("--records", type=int, default=30_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dg-loadtest"))
    a = ap.parse_args()
    recs = [orjson.loads(b) for b in request_bodies(1, a.work)[:a.records + 100]]
    for size in (int(x) for x in a.sizes.split(",")):
        pub = Publisher(OnlineDetector())
        pub.learn(recs[:100])                      # loads the scorer and classifier
        t0, rows = time.process_time(), 0
        for i in range(100, len(recs), size):
            rows += len(pub.learn(recs[i:i + size]))
        n = len(recs) - 100
        print(json.dumps({"batch": size, "cpu_us_per_record":
                          round((time.process_time() - t0) / n * 1e6, 1),
                          "rows_per_record": round(rows / n, 3)}), flush=True)


if __name__ == "__main__":
    main()
