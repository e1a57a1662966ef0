"""The replica's share of the work no single run owns, every tick: renewing the leases of
the runs executing here, failing runs whose replica died, starting queued runs, resuming
runs whose decisions are in, and pruning old events and checkpoints."""

from __future__ import annotations

import asyncio
import time

import grpc
import psycopg

from runtime.logging import get_logger
from services.agent import metrics
from services.agent.checkpoints import Checkpoints
from services.agent.executor import RunExecutor, error_event
from services.agent.local_runs import LocalRuns, RunSettings, streamed_text
from services.agent.run_rows import RunOutcome
from services.agent.run_store import RunStore

log = get_logger(__name__)

LOST_MESSAGE = "the agent replica running this turn stopped before it finished; send the message again"


class RunMaintenance:
    def __init__(
        self,
        *,
        store: RunStore,
        local: LocalRuns,
        executor: RunExecutor,
        checkpoints: Checkpoints,
        settings: RunSettings,
    ) -> None:
        self._store = store
        self._local = local
        self._executor = executor
        self._checkpoints = checkpoints
        self._settings = settings

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._maintain_forever(), name="run-maintenance")

    async def _maintain_forever(self) -> None:
        tick_s = min(1.0, self._settings.lease_s / 3)
        renew_every_s = self._settings.lease_s / 3
        prune_every_s = max(1.0, min(60.0, self._settings.events_ttl_s / 4))
        last_renew = last_prune = 0.0
        while True:
            await asyncio.sleep(tick_s)
            now = time.monotonic()
            try:
                if now - last_renew >= renew_every_s:
                    last_renew = now
                    await self._renew()
                await self._fail_lost_runs()
                await self._dispatch_pending()
                await self._resume_decided()
                if now - last_prune >= prune_every_s:
                    last_prune = now
                    pruned = await self._store.prune_events(self._settings.events_ttl_s)
                    if pruned:
                        log.info("run_events_pruned", runs=pruned)
                    threads = await self._checkpoints.prune_overgrown() if self._settings.checkpoints_keep else 0
                    if threads:
                        log.info("checkpoints_pruned", threads=threads)
            except (psycopg.Error, OSError) as exc:
                log.warning("run_maintenance_failed", error=type(exc).__name__)

    async def _renew(self) -> None:
        executing = self._local.executing()
        if not executing:
            return
        for run_id, action in (await self._store.renew_leases(self._local.replica, executing)).items():
            if action:  # a cancel whose notification this replica missed
                self._local.cancel_local(run_id, action)

    async def _fail_lost_runs(self) -> None:
        for run_id in await self._store.expired_leases(limit=20):
            run = await self._store.take_over_lost(run_id, self._local.replica)
            if run is None:
                continue
            text = await streamed_text(self._store, run)
            await self._executor.keep_interrupted(run, text)
            last = error_event(grpc.StatusCode.UNAVAILABLE, LOST_MESSAGE, "RUN_LOST")
            last.run_id, last.seq = run.run_id, run.last_seq + 1
            outcome = RunOutcome(
                status="failed",
                error_code=grpc.StatusCode.UNAVAILABLE.value[0],
                error_message=LOST_MESSAGE,
                error_reason="RUN_LOST",
            )
            await self._store.finish(run.run_id, outcome, [(last.seq, last.SerializeToString())])
            metrics.runs_lost_total.inc()
            log.warning("run_lost", run_id=run.run_id, session_id=run.session_id, lost_owner=run.lease_owner)
            self._local.spawn(self._local.dispatch(run.session_id))

    async def _resume_decided(self) -> None:
        """Interrupts past their expiry are resolved as REJECT; paused runs whose every
        interrupt is decided (also by a replica that died before resuming) go on here."""
        if not self._local.accepting:
            return
        expired = await self._store.expire_interrupts(limit=50)
        if expired:
            metrics.decisions_total.labels(decision="expired").inc(len(expired))
        for run_id in expired | set(await self._store.interrupted_runs_ready(limit=20)):
            await self._local.resume_if_ready(run_id)

    async def _dispatch_pending(self) -> None:
        if not self._local.accepting:
            return
        for session_id in await self._store.sessions_with_pending_runs(limit=20):
            await self._local.dispatch(session_id)
