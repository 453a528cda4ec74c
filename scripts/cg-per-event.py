#!/usr/bin/env python3
"""Instructions per event from callgrind runs of `pulse replay` (BENCHMARKS.md, "Breakdowns").

A run of the 200 000-line file and one of its first 2 000 lines cancel the fixed cost:
per event = ((total(200k) - snapshot(200k)) - (total(2k) - snapshot(2k))) / 198 000, where
snapshot is the inclusive cost of the final snapshot (`Pipeline::snapshot`), which grows
with the values held and is budgeted apart. That is the snapshot's router side only: its
worker side (`Worker::summarize`, on the worker's thread, called once by a replay) grows
with the values held too, so a third figure subtracts both sides.

    cg-per-event.py RUN                      # RUN-200k.out and RUN-2k.out: per event
    cg-per-event.py RUN_A RUN_B [N]          # both, and the N functions (self cost,
                                             # inlined code by its function) that moved most
"""
import collections
import re
import subprocess
import sys

SNAPSHOT = "pulse_ingest::pipeline::Pipeline::snapshot::{{closure}}"
WORKER_SNAPSHOT = "pulse_core::worker::Worker::summarize"
EVENTS = 198_000


def annotate(path, inclusive):
    out = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
         "--threshold=100", path],
        capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", out, re.M)
                .group(1).replace(",", ""))
    by_function = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \([ \d.]+%\)\s+(\S.*?):(\S.*?)(?: \[.*\])?$", line)
        if not m:
            continue
        cost, function = int(m.group(1).replace(",", "")), m.group(3)
        if inclusive:
            # The function's own line (with its binary) is its inclusive cost.
            if line.rstrip().endswith("]"):
                by_function[function] = max(by_function[function], cost)
        else:
            by_function[function] += cost
    return total, by_function


def per_event(run):
    parts = []
    for size in ("200k", "2k"):
        total, inclusive = annotate(f"{run}-{size}.out", True)
        parts.append((total, inclusive.get(SNAPSHOT, 0), inclusive.get(WORKER_SNAPSHOT, 0)))
    (t200, s200, w200), (t2, s2, w2) = parts
    return (
        (t200 - t2) / EVENTS,
        ((t200 - s200) - (t2 - s2)) / EVENTS,
        ((t200 - s200 - w200) - (t2 - s2 - w2)) / EVENTS,
    )


def self_costs(run):
    big = annotate(f"{run}-200k.out", False)[1]
    small = annotate(f"{run}-2k.out", False)[1]
    return {f: (big[f] - small.get(f, 0)) / EVENTS for f in big}


def main():
    runs = sys.argv[1:3] if len(sys.argv) > 2 else sys.argv[1:2]
    for run in runs:
        raw, without_snapshot, without_both = per_event(run)
        print(f"{run}: {raw:8.1f} per event, {without_snapshot:8.1f} without the snapshot, "
              f"{without_both:8.1f} without its worker side too")
    if len(runs) == 2:
        shown = int(sys.argv[3]) if len(sys.argv) > 3 else 25
        a, b = self_costs(runs[0]), self_costs(runs[1])
        moved = sorted(set(a) | set(b), key=lambda f: -abs(b.get(f, 0) - a.get(f, 0)))
        for f in moved[:shown]:
            before, after = a.get(f, 0), b.get(f, 0)
            print(f"{after - before:+8.1f} {before:8.1f} -> {after:8.1f}  {f[:110]}")


main()
