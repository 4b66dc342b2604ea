"""keel-hostd.service: the API for keelctl, and the policy's clock.

Every check_interval it asks the repository for a newer version and installs it (the
first time one tick after start; never, when check_interval is "never");
every minute it reboots into an installed update when the policy allows (immediate,
inside the maintenance window, or with a FleetLock slot), in steady state gives a
FleetLock slot back, and looks whether a block of the root failed its dm-verity check
(then it moves to the other slot when that holds a blessed version). At start, and
on every tick, it reconciles the state with what booted, which is how an automatic
rollback is noticed."""

from __future__ import annotations

import logging
import sys
import threading
import time

from hostd import api
from hostd.policy import PolicyError
from hostd.updater import Refused, Updater

log = logging.getLogger("keel.hostd")

TICK = 60.0


def scheduler(updater: Updater, stop: threading.Event) -> None:
    next_check = 0.0  # first check one tick after start, when the boot has settled
    while not stop.wait(TICK):
        try:
            updater.reconcile()
            updater.watch_root()
            updater.fleet.settle(updater)
            policy = updater.policy()
            interval = policy.check_seconds()
            if policy.repository and interval is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + interval
                updater.update()
            updater.reboot_if_due()
        except (Refused, PolicyError) as error:
            log.warning("scheduled update: %s", error)
            next_check = time.monotonic() + TICK * 10
        except Exception:
            log.exception("scheduled update failed")
            next_check = time.monotonic() + TICK * 10


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    updater = Updater()
    state = updater.reconcile()
    result = state.last_result
    log.info(
        "hostd: %s %s, update phase %s, last result %s",
        updater.release.name,
        updater.release.version,
        state.phase,
        f"{result.result} {result.version}: {result.reason}" if result else "none",
    )
    server = api.serve(updater)
    stop = threading.Event()
    threading.Thread(target=scheduler, args=(updater, stop), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
