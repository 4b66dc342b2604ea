"""Applying updates, rolling back, and telling what happened (the core of hostd).

Order of an update, each step persisted before the next (see hostd/state.py):
  take      download the bundle, or copy the local bundle file, into hostd's private
            folder (root only, emptied before and after every attempt): from here on
            only that copy is read, so nobody can swap the bundle after it is verified
  verify    TUF metadata and the copy (tufclient), then the bundle's content
            against this host: image name, architecture, version, slot size
  unhook    remove the inactive slot's loader entries, so nothing boots it while it
            is half written
  write     stream the root image through zstd into the inactive slot, fsync, read
            it back from the disk and compare its sha256
  install   the unified kernel image to the ESP (temporary name, verify, fsync,
            rename), then the loader entry with a fresh tries counter, last
  reboot    now, in the maintenance window, or when the operator says so
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from hostd import chunkfetch, cmdline, delta, fleet, growvar, integrity, slots
from hostd.esp import Entry, EspTree, firmware_db, secure_boot_enabled
from hostd.files import UnsafeFile, empty_folder, free_bytes, fresh_private_folder, open_untrusted
from hostd.formats import blockindex, bootentry, efisignature, verity
from hostd.formats.bundle import Bundle, BundleError, BundleInfo, chunks, verify_stream
from hostd.formats.sizes import MIB
from hostd.formats.version import is_newer, version_key
from hostd.policy import Policy, PolicyError, load_policy
from hostd.state import IN_FLIGHT, STATE_DIR, Phase, Result, StateStore, UpdateState
from hostd.tufclient import (
    CACHE_DIR,
    TRUST_ROOT,
    Candidate,
    Repository,
    RepositoryRefused,
    copy_matching,
    deadline_seconds,
)

log = logging.getLogger("keel.hostd")

HEALTH_RECORD = "health.json"
ESP_MARGIN = MIB
# The private folder (under the state dir) and the one bundle it holds during an update.
STAGING = "staging"
STAGED_BUNDLE = "bundle.keelbundle"
# A delta's block index, kept across attempts (hostd/delta.py).
DELTA_FOLDER = "delta"
# What /var keeps free beside a bundle, for the state, the history and the journal. The
# slot is written straight to its partition: it needs nothing on /var.
VAR_MARGIN = MIB
# Progress is persisted now and then, not on every block.
PROGRESS_STEP = 32 * MIB
# Words of a bundle's command line that name a slot: the entry writes its own.
SLOT_WORDS = ("root=", "keel.slot=")


class Refused(Exception):
    """An update or rollback that hostd will not do; the message is the reason."""


@dataclass
class HostPaths:
    """Where hostd finds things; tests point these into a tmp dir."""

    state_dir: Path = STATE_DIR
    esp: Path = Path("/efi")
    partlabels: Path = slots.PARTLABELS
    release: Path = slots.RELEASE
    trust_root: Path = TRUST_ROOT
    tuf_cache: Path = CACHE_DIR
    # The host's own kernel arguments, from its provisioning config (hostd/cmdline.py).
    kernel_arguments: Path = cmdline.ARGUMENTS_PATH
    booted_slot: Callable[[], str] = field(default=slots.booted_slot)
    reboot: Callable[[], None] = field(default=lambda: _reboot_soon())
    policy: Callable[[], Policy] = field(default=load_policy)
    # The sizes of var, its partition and disk (keel-grow-var.service grows them).
    var_sizes: Callable[[], dict[str, Any]] = field(default=growvar.summary)
    # The booted root's dm-verity state: verified, corrupted, or None (hostd/integrity.py).
    root_verity: Callable[[], str | None] = field(default=integrity.root_verity)
    # Whether the firmware enforces Secure Boot (its SecureBoot variable).
    secure_boot: Callable[[], bool] = field(default=lambda: secure_boot_enabled())
    firmware_db: Callable[[], bytes | None] = field(default=lambda: firmware_db())


# Seconds between answering an update or rollback and rebooting.
REBOOT_DELAY = 5


def _reboot_soon() -> None:
    """Reboot a moment from now, so the API answer reaches the client first: keelctl
    prints it, and over SSH it still has to leave the host; under load that took more
    than 2 s (a test's SSH session lost the answer to the reboot)."""

    def later() -> None:
        time.sleep(REBOOT_DELAY)
        log.info("rebooting into the new version")
        subprocess.run(["systemctl", "reboot"], check=False)

    threading.Thread(target=later, daemon=True).start()


def clean_cmdline(cmdline: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(word for word in cmdline if not word.startswith(SLOT_WORDS))


class Progress:
    """The progress callback of a download or a slot write; holds the state it last
    persisted, which the next step goes on from."""

    def __init__(self, store: StateStore, state: UpdateState, total: int) -> None:
        self.store = store
        self.state = state
        self.total = total
        self.persisted = 0

    def __call__(self, done: int) -> None:
        if done - self.persisted >= PROGRESS_STEP or done == self.total:
            self.persisted = done
            self.state = self.store.update(self.state, progress={"total": self.total, "done": done})


class Updater:
    def __init__(self, paths: HostPaths | None = None) -> None:
        self.paths = paths or HostPaths()
        self.store = StateStore(self.paths.state_dir)
        self.esp = EspTree(self.paths.esp)
        self.lock = threading.RLock()
        self.release = slots.read_release(self.paths.release)
        # Signed targets the last look at the repository left out (path -> why), for status.
        self.skipped_targets: dict[str, str] = {}
        # Reboot coordination and phased rollouts (hostd/fleet.py).
        self.fleet = fleet.Coordinator(self.paths.state_dir)
        # Set once watch_root() has reported a corrupted root for this boot.
        self._root_reported = False

    # --- what the host runs and may run -------------------------------------------

    def policy(self) -> Policy:
        return self.paths.policy()

    def _image(self, policy: Policy) -> tuple[str, str]:
        """Image name and architecture updates must have (policy may not say)."""
        return policy.name or self.release.name, policy.architecture or self.release.architecture

    def _check_info(
        self, state: UpdateState, info: BundleInfo, candidate: Candidate, slot: str
    ) -> None:
        """Everything that makes a verified version wrong for this host, as refusals
        (its kernel image's signature aside: _check_signature)."""
        name, architecture = self._image(self.policy())
        if (info.name, info.architecture) != (name, architecture):
            raise Refused(
                f"the bundle is for {info.name}/{info.architecture}; "
                f"this host runs {name}/{architecture}"
            )
        if info.version != candidate.version:
            raise Refused(
                f"the bundle says version {info.version} but the signed metadata "
                f"says {candidate.version}"
            )
        self._check_version(state, info.version)
        device = slots.slot_device(slot, self.paths.partlabels)
        capacity = slots.device_size(device)
        if info.root.size > capacity:
            raise Refused(
                f"the root image ({info.root.size} bytes) does not fit slot {slot} "
                f"({capacity} bytes)"
            )
        needed = info.uki.size + ESP_MARGIN
        if needed > self.esp.free_bytes() + self.esp.slot_boot_files_size(slot):
            raise Refused(f"the ESP has no room for the unified kernel image ({needed} bytes)")

    def _check_signature(self, uki: IO[bytes], version: str) -> None:
        """Under Secure Boot, a kernel image the firmware would refuse is refused here:
        the firmware would stop the machine before any counter or rollback could act."""
        if not self.paths.secure_boot():
            return
        certificates = efisignature.db_certificates(self.paths.firmware_db() or b"")
        try:
            signed = efisignature.signed_by_one_of(uki, certificates)
        except efisignature.SignatureError as error:
            raise Refused(f"{version}'s kernel image is not a signed EFI image: {error}") from None
        if not signed:
            raise Refused(
                f"Secure Boot is on, and {version}'s kernel image is unsigned or signed by a "
                "key whose certificate is not in this machine's db: the firmware would "
                "refuse to start it. Build the version with `keel build --keys DIR`, DIR "
                "holding the Secure Boot keys this machine is enrolled with"
            )

    def _check_version(self, state: UpdateState, version: str) -> None:
        if version in state.failed_versions:
            raise Refused(
                f"{version} failed on this host before ({state.failed_versions[version]}); "
                "hostd does not install it again"
            )
        if not is_newer(version, self.release.version):
            raise Refused(
                f"{version} is not newer than the booted {self.release.version}; updates only "
                "move forward (`keelctl rollback` is the way back)"
            )

    def _repository(self, url: str | None = None) -> Repository:
        policy = self.policy()
        return Repository(url or policy.repository, self.paths.trust_root, self.paths.tuf_cache)

    def _candidates(self, repo: Repository) -> list[Candidate]:
        name, architecture = self._image(self.policy())
        found = repo.candidates(name, architecture)
        self.skipped_targets = dict(repo.skipped)
        return found

    def _best(self, state: UpdateState, repo: Repository) -> Candidate | None:
        failed = state.failed_versions
        newer = [
            c
            for c in self._candidates(repo)
            if is_newer(c.version, self.release.version)
            and c.version not in failed
            and self.fleet.may_take(c)
        ]
        if not newer:
            return None
        return max(newer, key=lambda c: version_key(c.version))

    # --- verbs ---------------------------------------------------------------------

    def check(self) -> dict[str, Any]:
        """Ask the repository for a newer version; install nothing."""
        with self.lock:
            try:
                best = self._best(self.store.load(), self._repository())
            except RepositoryRefused as error:
                self._refuse("", str(error))
                raise Refused(str(error)) from None
            self.store.record("check", {"available": best.version if best else ""})
            return {
                "booted": self.release.version,
                "available": best.version if best else None,
                "path": best.path if best else None,
            }

    def update(
        self, bundle: Path | None = None, metadata: str | None = None, reboot: bool = False
    ) -> dict[str, Any]:
        """Install the newest version (or the given bundle) into the inactive slot."""
        with self.lock:
            state = self.reconcile()
            try:
                staging = fresh_private_folder(self.paths.state_dir / STAGING)
            except (UnsafeFile, OSError) as error:
                reason = f"hostd's private folder is unusable: {error}"
                self._refuse("", reason)
                raise Refused(reason) from None
            self._remove_old_downloads()
            try:
                return self._update(state, staging / STAGED_BUNDLE, bundle, metadata, reboot)
            finally:
                # Whatever happened, nothing is left on /var: a retry takes the bundle anew.
                empty_folder(staging)

    def _remove_old_downloads(self) -> None:
        """Bundles that a hostd from before the private folder downloaded into the state
        dir itself, and left there when it was cut short."""
        state_dir = self.paths.state_dir
        for stale in (*state_dir.glob("*.keelbundle"), *state_dir.glob(".*.keelbundle.tmp")):
            stale.unlink(missing_ok=True)

    def _update(
        self,
        state: UpdateState,
        staged: Path,
        bundle: Path | None,
        metadata: str | None,
        reboot: bool,
    ) -> dict[str, Any]:
        try:
            repo = self._repository(metadata)
            state = self.fleet.drop_halted(self, state, repo)
            if bundle is not None:
                candidate = self._take_bundle(repo, bundle, staged)
                self._check_version(state, candidate.version)
            else:
                found = self._best(state, repo)
                if found is None:
                    return {"result": "up-to-date", "version": self.release.version}
                candidate = found
        except (RepositoryRefused, Refused) as error:
            self._refuse("", str(error))
            raise Refused(str(error)) from None
        if state.phase == Phase.INSTALLED and state.target_version == candidate.version:
            return self._maybe_reboot(reboot, "already installed", candidate.version)
        target_slot = slots.other_slot(self.paths.booted_slot())
        if bundle is None:
            if self._delta(state, repo, candidate, target_slot, staged.parent):
                return self._maybe_reboot(reboot, "installed", candidate.version)
            state = self._download(self.store.load(), repo, candidate, target_slot, staged)
        self._apply(state, staged, candidate, target_slot, downloaded=bundle is None)
        return self._maybe_reboot(reboot, "installed", candidate.version)

    def _take_bundle(self, repo: Repository, source: Path, staged: Path) -> Candidate:
        """Copy a local bundle file to staged and return the signed target it is.

        Whoever can write the file or its folder can put other bytes behind its path at
        any moment (inotify says when hostd has read it), so it is opened once, never
        through a link, and everything after reads only the private copy."""
        candidates = self._candidates(repo)
        name, architecture = self._image(self.policy())
        try:
            with open_untrusted(source) as handle:
                size = os.fstat(handle.fileno()).st_size
                self._check_room(staged.parent, size, f"a copy of {source.name}")
                return copy_matching(
                    handle, staged, candidates, f"{name}/{architecture}", source.name
                )
        except UnsafeFile as error:
            raise Refused(str(error)) from None
        except OSError as error:
            raise Refused(f"cannot take {source}: {error}") from None

    def _check_room(self, folder: Path, needed: int, what: str) -> None:
        free = free_bytes(folder)
        if needed + VAR_MARGIN > free:
            raise Refused(
                f"{folder} has {free} bytes free; {what} needs {needed} bytes, and hostd "
                f"keeps {VAR_MARGIN} bytes spare on /var"
            )

    def _download(
        self, state: UpdateState, repo: Repository, candidate: Candidate, slot: str, dest: Path
    ) -> UpdateState:
        try:
            self._check_room(dest.parent, candidate.length, f"the {candidate.version} bundle")
        except Refused as error:
            self._refuse(candidate.version, str(error))
            raise
        state = self._begin(
            state, Phase.DOWNLOADING, candidate.version, slot,
            progress={"total": candidate.length, "done": 0},
        )  # fmt: skip
        progress = Progress(self.store, state, candidate.length)
        try:
            repo.download(candidate, dest, progress)
        except RepositoryRefused as error:
            self.store.finish(progress.state, "refused", candidate.version, str(error))
            raise Refused(str(error)) from None
        except OSError as error:
            reason = f"download failed: {error}"
            self.store.finish(progress.state, "failed", candidate.version, reason)
            raise Refused(reason) from None
        except Exception as error:
            raise self._failed_unexpectedly(candidate.version, "the download", error) from error
        return progress.state

    # --- delta updates (hostd/delta.py) ---------------------------------------------

    def _delta(
        self, state: UpdateState, repo: Repository, candidate: Candidate, slot: str, staging: Path
    ) -> bool:
        """Install candidate from the blocks this host holds and the chunks it lacks.
        False when the repository has no index for it, or the delta failed (recorded
        in the history): the full bundle is then the way. Refusals any way of getting
        the version would meet (failed before, too big, unsigned) are raised."""
        if not self.policy().delta:
            return False
        version = candidate.version
        try:
            fetched = repo.fetch_index(candidate, self.paths.state_dir / DELTA_FOLDER)
            if fetched is None:
                return False
            raw, index_downloaded = fetched
            index = blockindex.decode(raw)
            self._check_info(state, index.info, candidate, slot)
        except Refused as error:
            self._refuse(version, str(error))
            raise
        except (RepositoryRefused, blockindex.BlockIndexError, OSError) as error:
            self._delta_failed(state, version, str(error))
            return False
        state = self._begin(
            state, Phase.DOWNLOADING, version, slot,
            progress={"total": index.info.root.size, "done": 0},
        )  # fmt: skip
        try:
            transfer = self._write_delta(
                state, index, repo, candidate, slot, staging, index_downloaded
            )
        except Refused as error:
            self._refuse(version, str(error))
            raise
        except (
            chunkfetch.FetchError,
            delta.DeltaError,
            slots.SlotError,
            BundleError,
            OSError,
        ) as error:
            self._delta_failed(self.store.load(), version, str(error))
            return False
        except Exception as error:
            raise self._failed_unexpectedly(version, "the delta update", error) from error
        log.info(
            "delta update to %s: downloaded %d of %d bytes", version,
            transfer["downloaded"], transfer["full"],
        )  # fmt: skip
        return True

    def _write_delta(
        self,
        state: UpdateState,
        index: blockindex.BlockIndex,
        repo: Repository,
        candidate: Candidate,
        slot: str,
        staging: Path,
        index_downloaded: int,
    ) -> dict[str, Any]:
        info = index.info
        booted = self.paths.booted_slot()
        if slot == booted:
            raise Refused(f"slot {slot} is the booted slot; refusing to write it")
        booted_device = slots.slot_device(booted, self.paths.partlabels)
        device = slots.slot_device(slot, self.paths.partlabels)
        local = delta.LocalBlocks()
        local.scan(booted_device, delta.image_extent(booted_device))
        extent = max(delta.image_extent(device), info.root.size)
        in_place = local.scan(device, min(extent, slots.device_size(device)))
        for uki_slot in bootentry.SLOTS:
            uki_file = self.esp.slot_uki(uki_slot)
            if uki_file.is_file():
                local.scan(uki_file, uki_file.stat().st_size)
        # As long as the bundle download may take, for the blocks that may be fetched.
        fetcher = chunkfetch.ChunkFetcher(repo.url, deadline=deadline_seconds(info.root.size))
        try:
            # The kernel image first, into the private folder: checked whole (and its
            # signature) before the slot is unhooked, so a failure leaves the slot alone.
            staged_uki = staging / "keel.efi"
            self._check_room(staging, info.uki.size, f"{info.version}'s kernel image")
            staged_uki.touch(mode=0o600)
            stats = delta.assemble(staged_uki, index.file("uki"), local, fetcher)
            with staged_uki.open("rb") as handle:
                verify_stream(handle, info.uki)
            with staged_uki.open("rb") as handle:
                self._check_signature(handle, info.version)
            state = self._unhook(state, info.version, slot)
            expected = verity.from_cmdline(info.cmdline)
            progress = Progress(self.store, state, info.root.size)
            stats.add(
                delta.assemble(
                    device,
                    index.file("root"),
                    local,
                    fetcher,
                    in_place=in_place,
                    computed_from=expected.hash_start_block if expected else None,
                    progress=progress,
                )
            )
        finally:
            fetcher.close()
        if expected is not None:
            delta.write_verity_tree(device, expected)
        self._check_written(device, info, slot)
        transfer = {
            "mode": "delta",
            "downloaded": index_downloaded + stats.downloaded,
            "full": candidate.length,
            "fetched_blocks": stats.fetched,
            "reused_blocks": stats.copied,
            "kept_blocks": stats.in_place,
            "computed_blocks": stats.rebuilt,
        }
        with staged_uki.open("rb") as handle:
            self._install_boot_files(progress.state, info, handle, slot, transfer)
        return transfer

    def _delta_failed(self, state: UpdateState, version: str, why: str) -> None:
        """Leave the delta behind (history says why) for the full bundle."""
        log.warning("delta update to %s failed, taking the full bundle: %s", version, why)
        self.store.record("delta-failed", {"version": version, "reason": why})
        if state.phase != Phase.IDLE:
            self.store.transition(state, Phase.IDLE, progress={})

    def _begin(
        self, state: UpdateState, phase: Phase, version: str, slot: str, **changes: Any
    ) -> UpdateState:
        """The first phase of installing version into slot, from the booted version."""
        return self.store.transition(
            state, phase, target_version=version, target_slot=slot,
            from_version=self.release.version, **changes,
        )  # fmt: skip

    def _failed_unexpectedly(self, version: str, step: str, error: Exception) -> Refused:
        """Record a failure nobody foresaw (a bug, most likely) as the update's result, so
        the state does not stay in flight; the journal gets the traceback."""
        log.exception("%s of %s failed", step, version)
        reason = f"{step} failed: {type(error).__name__}: {error}"
        self._refuse(version, reason, result="failed")
        return Refused(reason)

    def _apply(
        self, state: UpdateState, path: Path, candidate: Candidate, slot: str, downloaded: bool
    ) -> None:
        """Check the bundle against this host, write it into slot, then make slot bootable.
        downloaded: from the repository (else from a file the operator gave)."""
        version = candidate.version
        try:
            with Bundle(path) as bundle:
                self._check_info(state, bundle.info, candidate, slot)
                self._check_signature(bundle.open_member(bundle.info.uki), version)
                # Last line of defence: whatever happened above, the booted slot is not
                # written (booted_slot() checks the command line and the / device).
                if slot == self.paths.booted_slot():
                    raise Refused(f"slot {slot} is the booted slot; refusing to write it")
                state = self._write_slot(state, bundle, version, slot)
                transfer = {
                    "mode": "full" if downloaded else "local bundle",
                    "downloaded": candidate.length if downloaded else 0,
                    "full": candidate.length,
                }
                uki = bundle.open_member(bundle.info.uki)
                self._install_boot_files(state, bundle.info, uki, slot, transfer)
        except (Refused, BundleError) as error:
            self._refuse(version, str(error))
            raise Refused(str(error)) from None
        except (slots.SlotError, OSError) as error:
            reason = f"writing slot {slot} failed: {error}"
            # From disk: the step that failed may have persisted a newer state.
            self.store.finish(self.store.load(), "failed", version, reason)
            raise Refused(reason) from None
        except Exception as error:
            raise self._failed_unexpectedly(version, f"writing slot {slot}", error) from error

    def _write_slot(
        self, state: UpdateState, bundle: Bundle, version: str, slot: str
    ) -> UpdateState:
        """Unhook slot, stream the root image into it, and read it back from the disk."""
        state = self._unhook(state, version, slot)
        root = bundle.info.root
        device = slots.slot_device(slot, self.paths.partlabels)
        progress = Progress(self.store, state, root.size)
        slots.write_compressed(device, chunks(bundle.open_member(root)), root, progress)
        self._check_written(device, bundle.info, slot)
        return progress.state

    def _unhook(self, state: UpdateState, version: str, slot: str) -> UpdateState:
        """Into writing-slot, with slot's loader entries and boot files gone first: from
        here until the new entry, nothing boots the slot."""
        if state.phase == Phase.DOWNLOADING:
            state = self.store.transition(state, Phase.WRITING_SLOT)
        else:  # a local bundle: nothing has named the target yet
            state = self._begin(state, Phase.WRITING_SLOT, version, slot)
        removed = self.esp.remove_slot_entries(slot)
        if removed:
            log.info("slot %s unhooked before writing: removed %s", slot, removed)
        self.esp.remove_slot_boot_files(slot)
        return state

    def _check_written(self, device: Path, info: BundleInfo, slot: str) -> None:
        """Read the slot back from the disk: its sha256 must be the signed one, and with
        keel.verity= on the new version's command line, its data and hash tree must give
        exactly that root hash (checked in the same read): a build that got its tree
        wrong would otherwise fail every block read at boot."""
        root = info.root
        try:
            expected = verity.from_cmdline(info.cmdline)
        except verity.VerityError as error:
            raise Refused(f"slot {slot}: {error}") from None
        tree_check = verity.StreamCheck(expected) if expected is not None else None
        on_disk = slots.read_back_sha256(
            device, root.size, also=tree_check.feed if tree_check else None
        )
        if on_disk != root.sha256:
            raise slots.SlotError(f"slot {slot} reads back sha256 {on_disk}, not {root.sha256}")
        if tree_check is not None:
            try:
                tree_check.finish()
            except verity.VerityError as error:
                raise Refused(f"slot {slot} fails its dm-verity check: {error}") from None

    def _install_boot_files(
        self,
        state: UpdateState,
        info: BundleInfo,
        uki: IO[bytes],
        slot: str,
        transfer: dict[str, Any] | None = None,
    ) -> None:
        """The UKI onto the ESP, then, last, the loader entry that boots it."""
        state = self.store.transition(state, Phase.INSTALLING)
        version = info.version
        self.esp.install_boot_file(bootentry.uki_path(slot), chunks(uki), info.uki)
        words = self._with_host_arguments(clean_cmdline(info.cmdline))
        entry = bootentry.BootEntry(info.name, version, slot, words)
        name = self.esp.write_entry(entry)
        log.info("installed %s into slot %s, loader entry %s", version, slot, name)
        self.store.transition(state, Phase.INSTALLED, progress={}, transfer=transfer or {})
        self.store.record("installed", {"version": version, "slot": slot, **(transfer or {})})

    def _refuse(self, version: str, reason: str, result: str = "refused") -> None:
        """Record a refusal (or failure); an update already installed and waiting stays
        installed."""
        state = self.store.load()
        if state.phase in IN_FLIGHT:
            self.store.finish(state, result, version, reason)
            return
        log.warning("update %s %s: %s", version or "-", result, reason)
        self.store.record(result, {"version": version, "reason": reason})
        self.store.update(state, last_result=Result(result, version, reason, time.time()))

    def _maybe_reboot(self, asked: bool, result: str, version: str) -> dict[str, Any]:
        rebooting = asked or self.fleet.may_reboot(self.policy(), version, datetime.now())
        if rebooting:
            self.paths.reboot()
        return {"result": result, "version": version, "rebooting": rebooting}

    def reboot_if_due(self) -> bool:
        """The agent's timer: reboot into an installed update when the policy allows."""
        with self.lock:
            state = self.store.load()
            if (
                state.phase == Phase.INSTALLED
                and self.fleet.may_reboot(self.policy(), state.target_version, datetime.now())
                and self.fleet.still_wanted(self, state)
            ):
                self.paths.reboot()
                return True
            return False

    def rollback(self, reboot: bool = True) -> dict[str, Any]:
        """Boot the other slot's version next; the data on var is not touched."""
        with self.lock:
            state = self.reconcile()
            booted = self.paths.booted_slot()
            other = slots.other_slot(booted)
            entry = self.esp.slot_entry(other)
            if state.phase in IN_FLIGHT:
                raise Refused(f"an update is in progress ({state.phase}); try again after it")
            if state.phase == Phase.INSTALLED:
                raise Refused(
                    f"slot {other} holds {state.target_version}, installed and not booted yet; "
                    "reboot to try it, or wait for the policy to reboot"
                )
            if entry is None:
                raise Refused(f"slot {other} holds no bootable version; nothing to roll back to")
            if entry.version in state.failed_versions:
                raise Refused(
                    f"slot {other} holds {entry.version}, which failed on this host "
                    f"({state.failed_versions[entry.version]})"
                )
            reason = f"rolled back by the operator from {self.release.version} to {entry.version}"
            failed = {**state.failed_versions, self.release.version: reason}
            # Saved before the ESP changes: after a power cut between the two, the host
            # boots the old version knowing that this one was left (or, with the switch
            # not done, boots this one again, which nothing then reinstalls). Saved
            # after, the scheduler would install this version again on the old one.
            state = self.store.update(state, failed_versions=failed)
            try:
                self._switch_to(entry, booted)
            except OSError as error:
                why = f"rollback to {entry.version} failed on the ESP: {error}"
                self.store.finish(state, "failed", self.release.version, why)
                raise Refused(why) from None
            self.store.finish(state, "rolled-back", self.release.version, reason)
            if reboot:
                self.paths.reboot()
            return {"result": "rolled-back", "to": entry.version, "rebooting": reboot}

    def _switch_to(self, entry: Entry, booted: str) -> None:
        """Make entry (the other slot's) the one systemd-boot boots next."""
        current = self.esp.slot_entry(booted)
        # The other entry gets a fresh counter, so if it no longer boots the host
        # comes back here; the booted entry goes last (tries 0) but stays bootable.
        words = self._with_host_arguments(self._entry_cmdline(entry))
        fresh = bootentry.BootEntry(self.release.name, entry.version, entry.slot, words)
        self.esp.write_entry(fresh)
        if entry.filename != bootentry.entry_filename(entry.version, entry.slot):
            self.esp.remove_entry(entry.filename)
        if current is not None:
            self.esp.mark_bad(current)

    def _with_host_arguments(self, words: tuple[str, ...]) -> tuple[str, ...]:
        """A new entry's extra words with the host's own kernel arguments applied, so
        they outlive the entry provisioning edited."""
        return cmdline.edit(words, cmdline.load(self.paths.kernel_arguments))

    def _entry_cmdline(self, entry: Entry) -> tuple[str, ...]:
        """The extra command line words of an existing entry (after its slot words)."""
        text = (self.esp.entries_dir / entry.filename).read_text()
        for line in text.splitlines():
            if line.startswith("options "):
                words = line.removeprefix("options ").split()
                return clean_cmdline(tuple(w for w in words if w not in bootentry.MOUNT_WORDS))
        return ()

    # --- after a boot ----------------------------------------------------------------

    def reconcile(self) -> UpdateState:
        """Bring the state in line with what booted: success, rollback or interruption."""
        with self.lock:
            state = self.store.load()
            if state.phase == Phase.INSTALLING and self._entry_installed(state):
                # The power went after the loader entry was written, before "installed"
                # was saved. systemd-boot boots that entry, so the state follows it:
                # else the version would run untracked, and once it failed, be
                # installed again and again.
                state = self.store.transition(state, Phase.INSTALLED, progress={})
                self.store.record(
                    "installed", {"version": state.target_version, "slot": state.target_slot}
                )
            if state.phase in IN_FLIGHT:
                reason = (
                    f"interrupted during {state.phase} (reboot or power loss); "
                    "the update can be retried"
                )
                return self.store.finish(state, "interrupted", state.target_version, reason)
            if state.phase not in (Phase.INSTALLED, Phase.TRIAL):
                return state
            booted = self.paths.booted_slot()
            entry = self.esp.slot_entry(state.target_slot)
            if booted == state.target_slot and self.release.version == state.target_version:
                if entry is not None and entry.state == "good":
                    return self.store.finish(
                        state, "succeeded", state.target_version,
                        f"booted {state.target_version} from slot {booted} and passed the "
                        "health gate",
                    )  # fmt: skip
                if state.phase == Phase.INSTALLED:
                    return self.store.transition(state, Phase.TRIAL)
                return state
            if entry is None or entry.version != state.target_version or entry.state == "bad":
                reason = self._failure_reason(state.target_version)
                failed = {**state.failed_versions, state.target_version: reason}
                return self.store.finish(
                    state, "rolled-back", state.target_version, reason, failed_versions=failed
                )
            return state

    def watch_root(self) -> None:
        """When a block of the booted slot failed its dm-verity check, say so once (log,
        history, last result) and, if the other slot holds a blessed version, mark this
        boot's entry bad and reboot into it. Not a fault of the version: the slot is
        written afresh by the next update, so the version is not put on the failed list."""
        if self._root_reported or self.paths.root_verity() != integrity.CORRUPTED:
            return
        self._root_reported = True
        with self.lock:
            booted = self.paths.booted_slot()
            entry = self.esp.slot_entry(booted)
            other = self.esp.slot_entry(slots.other_slot(booted))
            version = self.release.version
            moving = entry is not None and other is not None and other.state == "good"
            reason = (
                f"a block of slot {booted} failed its dm-verity check (the disk or someone "
                "with it changed the slot); "
                + (f"rebooting into {other.version} in the other slot" if other and moving
                   else "no blessed version in the other slot to move to")
            )  # fmt: skip
            log.error("root corrupted: %s", reason)
            self.store.record("root-corrupted", {"version": version, "slot": booted})
            state = self.store.load()
            self.store.update(
                state, last_result=Result("root-corrupted", version, reason, time.time())
            )
            if moving and entry is not None:
                log.error("marked %s bad", self.esp.mark_bad(entry))
                self.paths.reboot()

    def _entry_installed(self, state: UpdateState) -> bool:
        """Whether the target slot has the target version's loader entry: written last by
        an install, after the slot's old entries were removed before writing it."""
        entry = self.esp.slot_entry(state.target_slot)
        return entry is not None and entry.version == state.target_version

    def _failure_reason(self, version: str) -> str:
        record = self.health_record()
        if record.get("version") == version and record.get("result") == "failed":
            return f"health check failed: {record.get('reason', 'unknown')}"
        return (
            f"{version} did not finish booting within {bootentry.DEFAULT_TRIES} tries "
            "(kernel panic, root file system not mounting, or hang); the previous "
            "version booted instead"
        )

    def health_record(self) -> dict[str, Any]:
        try:
            data = json.loads((self.paths.state_dir / HEALTH_RECORD).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    # --- reporting -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self._state_now()
        booted = self.paths.booted_slot()
        other = slots.other_slot(booted)
        try:
            policy: dict[str, Any] | str = self.policy().to_json()
        except PolicyError as error:
            policy = f"invalid: {error}"

        def slot_info(slot: str) -> dict[str, Any]:
            entry = self.esp.slot_entry(slot)
            info: dict[str, Any] = {
                "slot": slot,
                "version": entry.version if entry else None,
                "entry": entry.filename if entry else None,
                "state": entry.state if entry else "empty",
            }
            if entry and entry.version in state.failed_versions:
                info["failed"] = state.failed_versions[entry.version]
            return info

        return {
            "image": self.release.name,
            "architecture": self.release.architecture,
            "booted": {**slot_info(booted), "version": self.release.version},
            "other": slot_info(other),
            "phase": state.phase,
            "target_version": state.target_version or None,
            "progress": state.progress,
            "last_result": state.last_result.__dict__ if state.last_result else None,
            "failed_versions": state.failed_versions,
            "last_transfer": state.transfer or None,
            "warnings": [
                f"signed target {path} skipped: {why}" for path, why in self.skipped_targets.items()
            ],
            "policy": policy,
            "var": self._var_sizes(),
            "root_verity": self.paths.root_verity(),
            "secure_boot": self.paths.secure_boot(),
            "fleet": self.fleet.status(),
        }

    def _var_sizes(self) -> dict[str, Any] | None:
        try:
            return self.paths.var_sizes()
        except (OSError, ValueError, growvar.LeftAlone) as error:
            log.debug("no var sizes for status: %s", error)
            return None

    def _state_now(self) -> UpdateState:
        """The state for status, at once. During an update (which holds the lock for
        minutes) it is the state the update last saved, phase and progress; state.json
        is replaced atomically, so reading it without the lock is safe. Otherwise it is
        reconciled with what booted, which takes the lock."""
        if not self.lock.acquire(blocking=False):
            return self.store.load()
        try:
            return self.reconcile()
        finally:
            self.lock.release()

    def history(self) -> list[dict[str, Any]]:
        return self.store.history()
