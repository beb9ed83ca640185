"""Statistical quality of the drift decision, measured on the real model.

Reference and current samples of N=1,000 texts come from topic pools
(tests/topics.py). With 30% of the current sample on a topic the reference
never saw, the combined decision must detect drift in at least 95% of 20
seeds; with both samples from the same pool it may raise at most 5% false
alarms. Both rates are printed (pytest -s shows them).
"""
from __future__ import annotations

import numpy as np

from jobs.drift_methods import compare
from jobs.embeddings import Embedder
from tests.topics import sample

SEEDS = 20
N = 1000
NEW_SHARE = 0.3


def test_detection_and_false_alarm_rates(make_config, make_store, clock):
    cfg = make_config()
    embedder = Embedder(make_store(cfg), cfg, clock)
    trials = {seed: (sample(N, 1000 + seed), sample(N, 2000 + seed, NEW_SHARE), sample(N, 3000 + seed))
              for seed in range(SEEDS)}
    unique = sorted({t for texts in trials.values() for side in texts for t in side})
    vectors = dict(zip(unique, embedder.encode(unique)))

    def vec(texts):
        return np.vstack([vectors[t] for t in texts])

    detected, false_alarms, per_method = 0, 0, {"drift": {}, "same": {}}
    for seed, (ref, shifted, same) in trials.items():
        r = vec(ref)
        drift, null = compare(r, vec(shifted), cfg.drift.quantile, cfg.drift.min_methods), \
            compare(r, vec(same), cfg.drift.quantile, cfg.drift.min_methods)
        detected += drift.detected
        false_alarms += null.detected
        for kind, result in (("drift", drift), ("same", null)):
            for m, res in result.methods.items():
                per_method[kind][m] = per_method[kind].get(m, 0) + res.detected
    detection_rate, false_alarm_rate = detected / SEEDS, false_alarms / SEEDS
    print(f"\ndrift quality over {SEEDS} seeds, N={N} per side, {len(unique)} distinct texts: "
          f"detection rate {detection_rate:.0%} with {NEW_SHARE:.0%} new topic, "
          f"false-alarm rate {false_alarm_rate:.0%} on the same pool; "
          f"per method (detections / false alarms): "
          + ", ".join(f"{m} {per_method['drift'][m]}/{per_method['same'][m]}" for m in per_method["drift"]))
    assert detection_rate >= 0.95
    assert false_alarm_rate <= 0.05
