"""FleetLock round trip: hostd's client taking a slot (pre-reboot) and giving it back
(steady-state) against `keel fleetlock serve` and a real etcd, both on loopback.

Starts etcd (Debian's etcd-server) with its data in a temporary folder, and the server
as the `keel fleetlock serve` command, then times N round trips of one host, each a
pre-reboot and a steady-state through hostd/fleetlock.py's post() (a new connection
per request, as hostd makes them; each request is one etcd read and one transaction).

Usage: python bench/fleetlock.py [-n 200] [--json]"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from composer.fleet.localetcd import running_etcd
from hostd import fleetlock

KEEL = [sys.executable, "-m", "composer.cli"]


def round_trips(url: str, count: int) -> dict[str, list[float]]:
    body = fleetlock.request_body("bench-host", "bench")
    timings: dict[str, list[float]] = {"pre_reboot": [], "steady_state": [], "round_trip": []}
    for _ in range(count):
        started = time.perf_counter()
        locked = fleetlock.post(url, fleetlock.PRE_REBOOT, body)
        middle = time.perf_counter()
        unlocked = fleetlock.post(url, fleetlock.STEADY_STATE, body)
        ended = time.perf_counter()
        if not (locked.ok and unlocked.ok):
            raise SystemExit(f"the server refused: {locked} {unlocked}")
        timings["pre_reboot"].append((middle - started) * 1000)
        timings["steady_state"].append((ended - middle) * 1000)
        timings["round_trip"].append((ended - started) * 1000)
    return timings


def measure(count: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="keel-bench-fleetlock-") as folder,
        running_etcd(Path(folder) / "etcd") as etcd,
    ):
        server = subprocess.Popen(
            [*KEEL, "fleetlock", "serve", "--etcd", etcd, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            round_trips(url, 10)  # warm up: connections, etcd's first writes
            timings = round_trips(url, count)
        finally:
            server.terminate()
            server.wait(10)
    return {
        "runs": count,
        **{
            f"median_{name}_ms": round(statistics.median(values), 2)
            for name, values in timings.items()
        },
        "p95_round_trip_ms": round(sorted(timings["round_trip"])[int(0.95 * (count - 1))], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=200, help="round trips (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    result = measure(args.n)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"FleetLock round trip (pre-reboot + steady-state, loopback, etcd), median of "
            f"{result['runs']}: {result['median_round_trip_ms']} ms "
            f"(pre-reboot {result['median_pre_reboot_ms']} ms, steady-state "
            f"{result['median_steady_state_ms']} ms; p95 {result['p95_round_trip_ms']} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
