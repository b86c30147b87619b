"""Drive the simulated world through the local API as a real client would: for each visit, read the
user's recommendations, show them, and post what the user did (tagged with their segment and experiment
arm, each view with the propensity serving logged for it, when it did). Visits run in batches of
`batch_minutes` of simulated time: a batch's recommendations are fetched concurrently, the world answers
them in visit order (seeded), and their events go in one batched post; so the online store has learned
from one batch's clicks before the next batch's recommendations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from feedbackloop.local.client import EventsClient, SendReport
from feedbackloop.simulation import Session, World
from feedbackloop.uiconfig import RANKING_EXPERIMENT

SHOWN = 10  # items per visit


@dataclass
class ArmFigures:
    """Ground truth of the simulation for one arm: what users were shown and did."""

    sessions: int = 0
    impressions: int = 0
    clicks: int = 0
    expected: float = 0.0  # sum over sessions of the mean click probability of what was shown
    oracle: float = 0.0  # the same for the best items the user could have been shown

    def merge(self, other: ArmFigures) -> None:
        self.sessions += other.sessions
        self.impressions += other.impressions
        self.clicks += other.clicks
        self.expected += other.expected
        self.oracle += other.oracle

    def add(self, visit: Session) -> None:
        self.sessions += 1
        self.impressions += visit.shown
        self.clicks += visit.clicks
        self.expected += visit.expected_ctr
        self.oracle += visit.oracle_ctr

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def expected_ctr(self) -> float:
        return self.expected / self.sessions if self.sessions else 0.0

    @property
    def oracle_ctr(self) -> float:
        return self.oracle / self.sessions if self.sessions else 0.0


@dataclass
class DayFigures:
    day: int
    start: datetime
    arms: dict[str, ArmFigures] = field(default_factory=dict)
    events: SendReport = field(default_factory=SendReport)
    unavailable: int = 0  # visits whose recommendations were not served (no model yet, errors)


class SimulatedClients:
    def __init__(self, api_url: str, api_key: str, world: World, threads: int = 4, batch_minutes: int = 20) -> None:
        self.world = world
        self.batch_minutes = batch_minutes
        self._api_url, self._api_key = api_url, api_key
        self._local = threading.local()
        self._clients: list[EventsClient] = []
        self.segment_members: dict[str, str] = {}  # a user seen in each segment (to probe its config)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="simulated-client")

    def _client(self) -> EventsClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = EventsClient(self._api_url, self._api_key)
            self._clients.append(client)
        return client

    def period(self, day: int, start: datetime, hours: int, visits: int, seed: int,
               progress: Callable[[DayFigures, int], None] | None = None) -> DayFigures:
        """`visits` visits spread over the `hours` hours from `start` (users drawn by activity), sent batch
        by batch."""
        rng = np.random.default_rng(seed)
        figures = DayFigures(day, start)
        users = self.world.visitors(visits, rng)
        offsets = np.sort(rng.uniform(0, hours * 3600, visits))
        seeds = rng.integers(0, 2**63, visits)
        step = self.batch_minutes * 60
        for batch in range(-(-hours * 3600 // step)):
            chosen = np.flatnonzero((offsets >= batch * step) & (offsets < (batch + 1) * step))
            pages = list(self._pool.map(lambda i: self._page(int(users[i])), chosen))
            events = []
            for i, page in zip(chosen, pages, strict=True):
                if page is None:
                    figures.unavailable += 1
                    continue
                shown, context, view_context = page
                visit = self.world.respond(int(users[i]), shown, start + timedelta(seconds=float(offsets[i])),
                                           context, np.random.default_rng(int(seeds[i])), view_context)
                figures.arms.setdefault(visit.variant or "none", ArmFigures()).add(visit)
                events.extend(visit.events)
            sent = self._client().send(events)
            figures.events.sent += sent.sent
            figures.events.accepted += sent.accepted
            figures.events.refused.update(sent.refused)
            if progress:
                progress(figures, batch * step // 3600)
        return figures

    def _page(self, user: int) -> tuple[list[str], dict, list[dict] | None] | None:
        """One visit's recommendations (they carry the user's segment and experiment arms, so one
        request is enough; a real page would also read /config once per session): the items, the
        events' context, and each view's (the propensity serving logged, when it did)."""
        client = self._client()
        user_id = self.world.user_ids[user]
        status, ranked, _ = client.request("GET", f"/users/{user_id}/recommendations?k={SHOWN}")
        if status != 200 or not ranked.get("items"):
            return None
        variant = ranked.get("experiments", {}).get(RANKING_EXPERIMENT)
        context = {"experiment": RANKING_EXPERIMENT, "variant": variant} if variant else {}
        segment = ranked.get("segment")
        if segment is not None:
            context["segment"] = segment
            self.segment_members.setdefault(segment, user_id)
        if ranked.get("request_id"):
            context["request_id"] = ranked["request_id"]
        if ranked.get("ranker"):  # the ranking that made the page: serving learns which earns clicks (1.3)
            context["ranker"] = ranked["ranker"]
        items = ranked["items"]
        logged = all("propensity" in item for item in items)
        return ([item["item_id"] for item in items], context,
                [{"propensity": item["propensity"]} for item in items] if logged else None)

    def close(self) -> None:
        self._pool.shutdown()
        for client in self._clients:
            client.close()
