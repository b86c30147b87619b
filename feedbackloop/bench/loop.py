"""`feedbackloop bench loop`: the closed loop's learning in the simulated world alone (feedbackloop/
simulation.py), seeded, each arm on its own copy of the same world (same users, same visits, same
shift, same new items):

- personalized: the serving code (`serving.recommend`, fold-in of the user's online profile, the
  items' recent counters) over a model trained on the real data before the simulated days; the visits'
  events go through the real cleaner in process (in-memory stores) every `batch_minutes` of simulated
  time, which merges them into the online profiles and the item counters serving reads, as the deployed
  cleaner does within seconds; greedy (the experiment's exploration is opt-in per arm), each page made
  by the ranking serving chooses from the rankers' counters (ADR 0021), the events carrying its name
  back as a client's do;
- popularity: the same model's popularity ranking (the experiment's control arm);
- bandit: river's LinUCB (disjoint) over the catalogue's category x price-level cells, the user's recent
  clicks per category and price level as its context; it fills the page from its three best cells with
  each cell's items in order of their click rate in its own log (popularity as the prior), skipping
  what the user ignored twice; it learns from every shown slot at once;
- oracle: the world's greedy best page at every visit;
- informed (a reference, not a policy anyone can deploy): popular items spread over the categories
  until the user's first click, the oracle's page from then on: the most a policy that learns a
  user's taste from their clicks can earn here, however fast it learns. A user who never clicks
  keeps the cold page, so the share of visits made before a first click bounds every learner.
- bayes (a reference too): a learner that knows the world's rules and priors but not the user's tastes.
  It keeps an exact posterior over each user's tastes (particles drawn from the world's own Dirichlet
  priors, weighed by the likelihood of every click, non-click, purchase and rating under the position,
  fatigue and purchase rules) and shows the items of highest posterior-expected click rate; it is told
  when tastes shift and starts again from the prior. No deployable system knows the rules of the world
  it serves: this is what learning from the clicks alone can earn here at best (with a greedy page), the
  yardstick the personalized arm's share is read against.

Figures are expected click rates per shown slot (the mean click probability of what was shown: the
ground truth, free of click noise); realized CTRs are printed beside them. Entries:
- loop_oracle_share_before_shift: personalized CTR / oracle CTR over the days before the shift
  (baseline: the popularity arm's share);
- loop_drop_regained_share: (share at the end of the first day after the shift - share in its first
  hours) / (share the day before - share in its first hours): the part of the drop regained within a
  simulated day (baseline: the popularity arm's);
- loop_ctr_vs_bandit: personalized realized CTR / the bandit's over the whole run.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from feedbackloop.adapters.memory import (
    MemoryDedupStore,
    MemoryItemCounterStore,
    MemoryLake,
    MemoryOnlineStore,
    MemoryStateStore,
)
from feedbackloop.bench import write_results
from feedbackloop.bench.model import _entry, feedback_daily
from feedbackloop.bench.tables import curated_events
from feedbackloop.cleaning.clean import CleaningRules
from feedbackloop.cleaning.decode import SourceRecords
from feedbackloop.cleaning.service import CleanerService
from feedbackloop.datasets import online_retail
from feedbackloop.ingest import envelope
from feedbackloop.local.retrain import LOCAL_TRAINING
from feedbackloop.models.contract import METRICS_FILE, MODEL_FILE
from feedbackloop.models.training import save, train
from feedbackloop.ranking import UserSignals
from feedbackloop.serving import ServingModel, recommend
from feedbackloop.simulation import CATEGORIES, PRICE_LEVELS, Catalog, Session, World

START = datetime(2026, 11, 2, tzinfo=UTC)  # the first simulated day; the real data ends an hour before
K = 10
REGAINED_ARMS = ("personalized", "popularity", "bandit", "informed", "bayes")
ARMS = ("personalized", "popularity", "bandit", "oracle", "informed", "bayes")


@dataclass(frozen=True)
class LoopBenchPlan:
    users: int = 500
    days: int = 5
    visits_per_day: int = 1200
    shift_day: int = 3  # tastes shift at the start of this day (0-based)
    arrival_day: int = 2  # the new items arrive at the start of this day
    batch_minutes: int = 15  # the personalized arm's events reach the cleaner this often
    dip_hours: int = 3  # the first hours after the shift: the dip
    recovered_hours: int = 6  # the last hours of the first day after the shift: what was regained
    seed: int = 7


# --- the arms --------------------------------------------------------------------------------------

class PersonalizedArm:
    """Serving's ranking over the online profiles the cleaner keeps, all in process."""

    def __init__(self, model: ServingModel, clock: Callable[[], datetime]) -> None:
        self.model = model
        self.store = MemoryOnlineStore()
        self.counters = MemoryItemCounterStore()
        self.cleaner = CleanerService(MemoryDedupStore(), MemoryStateStore(), MemoryLake(),
                                      CleaningRules(max_event_age=timedelta(days=400)), clock, online=self.store,
                                      item_counters=self.counters)
        self._clock = clock
        self._pending: list[dict] = []
        self.cleaned = 0
        self.requests = 0
        self.page_context: dict[str, str] = {}
        self.rankers: Counter[str] = Counter()  # pages per ranker (or per strategy without one)

    def rank(self, user_id: str, now: datetime) -> list[str]:
        profile = self.store.load([user_id])[user_id]
        self.requests += 1
        request_id = f"bench-{self.requests}"
        ranked = recommend(self.model, user_id, profile, now.timestamp(), k=K, request_id=request_id,
                           item_counts=lambda items: self.counters.load(items, now.timestamp()))
        # what a client sends back on the page's events (schema 1.3): the request and the ranker
        self.page_context = {"request_id": request_id} | ({"ranker": ranked.ranker} if ranked.ranker else {})
        self.rankers[ranked.ranker or ranked.strategy] += 1
        return [r.item_id for r in ranked.items]

    def observe(self, visit: Session, shown: list[str]) -> None:
        self._pending.extend(visit.events)

    def flush(self) -> None:
        if not self._pending:
            return
        now = self._clock()
        stamp = np.datetime64(now.astimezone(UTC).replace(tzinfo=None), "us")
        records = [envelope(e, now) for e in self._pending]
        sources = [f"sim:{self.cleaned + i}" for i in range(len(records))]
        outcome = self.cleaner.clean(SourceRecords(records, sources, np.full(len(records), stamp)))
        if outcome.failed_sources or outcome.write_errors:
            raise RuntimeError(f"the in-process cleaner failed: {outcome.write_errors}")
        self.cleaned += len(records)
        self._pending = []


class PopularityArm:
    def __init__(self, model: ServingModel) -> None:
        self.model = model

    def rank(self, user_id: str, now: datetime) -> list[str]:
        return [r.item_id for r in recommend(self.model, user_id, None, now.timestamp(), k=K,
                                             ordering="popularity").items]

    def observe(self, visit: Session, shown: list[str]) -> None:
        pass

    def flush(self) -> None:
        pass


class BanditArm:
    """river's disjoint LinUCB over category x price-level cells (see the module's docstring)."""

    CELLS_PER_PAGE = 3
    IGNORED_LIMIT = 2

    def __init__(self, world: World, popularity: dict[str, float], seed: int, alpha: float = 1.0,
                 half_life_visits: float = 5.0) -> None:
        from river.bandit import LinUCBDisjoint

        self.world = world
        catalog = world.catalog
        self.policy = LinUCBDisjoint(alpha=alpha, seed=seed)
        self.cell_of = catalog.categories * len(PRICE_LEVELS) + catalog.price_levels
        self.cells = sorted(set(self.cell_of.tolist()))
        prior = np.array([popularity.get(i, 0.0) for i in catalog.item_ids])
        self.prior = prior / max(prior.max(), 1e-9)
        self.shows = np.zeros(len(catalog.item_ids))
        self.clicks = np.zeros(len(catalog.item_ids))
        self.taste = defaultdict(lambda: np.zeros(len(CATEGORIES) + len(PRICE_LEVELS)))
        self.ignored: dict[str, dict[int, int]] = defaultdict(dict)
        self.decay = 0.5 ** (1 / half_life_visits)

    def context(self, user_id: str) -> dict[str, float]:
        taste = self.taste[user_id]
        total = max(float(taste[:len(CATEGORIES)].sum()), 1e-9)
        features = {f"c{j}": float(v) / total for j, v in enumerate(taste[:len(CATEGORIES)])}
        features |= {f"p{j}": float(v) / total for j, v in enumerate(taste[len(CATEGORIES):])}
        return features | {"bias": 1.0}

    def rank(self, user_id: str, now: datetime) -> list[str]:
        context = self.context(user_id)
        cells: list[int] = []
        for _ in range(self.CELLS_PER_PAGE):
            cells.append(self.policy.pull([c for c in self.cells if c not in cells], context))
        ignored = self.ignored[user_id]
        # click rate in the bandit's own log, popularity as a prior of 10 showings at 5%
        rate = (self.clicks + 0.5 * self.prior) / (self.shows + 10.0)
        queues = []
        for cell in cells:
            members = np.flatnonzero((self.cell_of == cell) & self.world.available)
            members = [m for m in members[np.argsort(-rate[members], kind="stable")]
                       if ignored.get(int(m), 0) < self.IGNORED_LIMIT]
            queues.append(members)
        page: list[int] = []
        while len(page) < K and any(queues):
            for queue in queues:
                if queue and len(page) < K:
                    page.append(int(queue.pop(0)))
        return [str(self.world.catalog.item_ids[i]) for i in page]

    def observe(self, visit: Session, shown: list[str]) -> None:
        user_id = self.world.user_ids[visit.user]
        context = self.context(user_id)
        rows = self.world.catalog.positions(shown)
        clicked = set(visit.clicked)
        taste = self.taste[user_id]
        taste *= self.decay
        for j, row in enumerate(rows):
            hit = j in clicked
            self.policy.update(int(self.cell_of[row]), context, float(hit))
            self.shows[row] += 1
            if hit:
                self.clicks[row] += 1
                self.ignored[user_id].pop(int(row), None)
                taste[self.world.catalog.categories[row]] += 1
                taste[len(CATEGORIES) + self.world.catalog.price_levels[row]] += 1
            else:
                self.ignored[user_id][int(row)] = self.ignored[user_id].get(int(row), 0) + 1

    def flush(self) -> None:
        pass


class OracleArm:
    def __init__(self, world: World) -> None:
        self.world = world

    def rank(self, user_id: str, now: datetime) -> list[str]:
        user = int(user_id.removeprefix("sim"))
        return [str(self.world.catalog.item_ids[i]) for i in self.world.best(user, K, now.timestamp())]

    def observe(self, visit: Session, shown: list[str]) -> None:
        pass

    def flush(self) -> None:
        pass


class InformedArm:
    """The cold page until the user's first click, the oracle's page after it (the module's docstring)."""

    def __init__(self, world: World, model: ServingModel) -> None:
        self.world = world
        self.model = model
        self.clicked: set[int] = set()
        self.ignored: dict[int, list[int]] = defaultdict(list)  # model rows shown and not clicked
        self.cold_visits = 0  # visits made before the user's first click

    def rank(self, user_id: str, now: datetime) -> list[str]:
        user = int(user_id.removeprefix("sim"))
        if user not in self.clicked:  # serving's cold page without what the user ignored (and no counters)
            self.cold_visits += 1
            rows = np.array(self.ignored[user], dtype=np.int64)
            ignored = UserSignals(rows, np.full(len(rows), -1.0), np.zeros(len(rows)), np.zeros(len(rows)),
                                  np.zeros(len(rows), dtype=bool))
            return [str(self.model.item_ids[i]) for i in self.model.ranker.popular(ignored, K)]
        return [str(self.world.catalog.item_ids[i]) for i in self.world.best(user, K, now.timestamp())]

    def observe(self, visit: Session, shown: list[str]) -> None:
        if visit.clicks:
            self.clicked.add(visit.user)
        else:
            self.ignored[visit.user] += [self.model.item_index[i] for i in shown if i in self.model.item_index]

    def flush(self) -> None:
        pass


class BayesArm:
    """The greedy Bayesian learner that knows the world's rules (the module's docstring)."""

    def __init__(self, world: World, seed: int, particles: int = 4000) -> None:
        self.world = world
        b = world.behaviour
        rng = np.random.default_rng(seed)
        categories = rng.dirichlet(np.full(len(CATEGORIES), b.category_concentration), particles)
        prices = rng.dirichlet(np.full(len(PRICE_LEVELS), b.price_concentration), particles)
        # each particle's affinity per category x price-level cell, as World.affinity computes it
        self.affinity = ((categories / categories.max(axis=1, keepdims=True))[:, :, None]
                         * (prices / prices.max(axis=1, keepdims=True))[:, None, :]).reshape(particles, -1)
        self.cell = world.catalog.categories * len(PRICE_LEVELS) + world.catalog.price_levels
        self.log_weights: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(particles))
        self.memory: dict[int, np.ndarray] = {}  # per user, the shown items' memory factors when shown

    def rank(self, user_id: str, now: datetime) -> list[str]:
        user = int(user_id.removeprefix("sim"))
        log_weights = self.log_weights[user]
        weights = np.exp(log_weights - log_weights.max())
        b, catalog = self.world.behaviour, self.world.catalog
        # the click rate is linear in affinity^2: its posterior mean takes the posterior mean of that alone
        expected = b.click_rate(np.sqrt(weights @ self.affinity ** 2 / weights.sum())[self.cell], catalog.appeal)
        memory = self.world.memory(user, now.timestamp())
        value = expected * memory
        top = np.argpartition(-value, K - 1)[:K]
        top = top[np.argsort(-value[top], kind="stable")]
        self.memory[user] = memory[top]
        return [str(catalog.item_ids[i]) for i in top]

    def observe(self, visit: Session, shown: list[str]) -> None:
        b, catalog = self.world.behaviour, self.world.catalog
        rows, memory = catalog.positions(shown), self.memory.pop(visit.user)
        clicked = set(visit.clicked)
        bought = {e["item_id"] for e in visit.events if e["event_type"] == "purchase"}
        ratings = {e["item_id"]: e["value"] for e in visit.events if e["event_type"] == "rating"}
        log_weights = self.log_weights[visit.user]
        for j, row in enumerate(rows):
            affinity = self.affinity[:, self.cell[row]]
            click = np.clip(self.world.examination[j] * b.click_rate(affinity, catalog.appeal[row]) * memory[j],
                            1e-12, 1 - 1e-12)
            if j not in clicked:
                log_weights += np.log1p(-click)
                continue
            purchase = np.clip(b.purchase_rate * affinity, 1e-12, 1 - 1e-12)
            log_weights += np.log(click) + (np.log(purchase) if shown[j] in bought else np.log1p(-purchase))
            if shown[j] in ratings:  # the rating is a function of the affinity: particles that disagree go
                log_weights += np.where(b.rating(affinity) == ratings[shown[j]], 0.0, -30.0)

    def shift(self) -> None:
        self.log_weights.clear()

    def flush(self) -> None:
        pass


# --- the model the personalized and popularity arms serve -------------------------------------------

def trained_model(frame: pd.DataFrame, catalog: Catalog, start: datetime) -> ServingModel:
    """The published model as the system would have it when the simulated days begin: the real data
    before the new items' first day, through the real cleaner and table steps, fitted with the training
    defaults, packaged and loaded as serving loads it."""
    known = frame[frame["CustomerID"].notna() & (pd.to_datetime(frame["InvoiceDate"]) < catalog.new_since)]
    arrival = start - timedelta(hours=1)
    curated, _ = curated_events(known, arrival, shift_to=arrival - timedelta(hours=1),
                                max_event_age=timedelta(days=400))
    daily = feedback_daily(curated, arrival)
    with tempfile.TemporaryDirectory(prefix="feedbackloop-bench-loop-") as folder:
        save(train(daily, None, LOCAL_TRAINING, "bench-loop"), Path(folder))
        arrays = np.load(Path(folder) / MODEL_FILE)
        document = json.loads((Path(folder) / METRICS_FILE).read_text())
        return ServingModel({name: arrays[name] for name in arrays.files}, document)


# --- the run -----------------------------------------------------------------------------------------

@dataclass
class Window:
    """Per arm, sums over the visits of a stretch of simulated time."""

    sessions: int = 0
    slots: int = 0
    clicks: int = 0
    expected: float = 0.0  # sum over sessions of the mean click probability per slot
    oracle: float = 0.0  # the same for the oracle's page at that visit (in this arm's world)

    def add(self, visit: Session) -> None:
        self.sessions += 1
        self.slots += visit.shown
        self.clicks += visit.clicks
        self.expected += visit.expected_ctr
        self.oracle += visit.oracle_ctr

    def merge(self, other: Window) -> None:
        for name in ("sessions", "slots", "clicks", "expected", "oracle"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def ctr(self) -> float:
        return self.clicks / self.slots if self.slots else 0.0

    @property
    def expected_ctr(self) -> float:
        return self.expected / self.sessions if self.sessions else 0.0


@dataclass
class LoopRun:
    plan: LoopBenchPlan
    hours: list[dict[str, Window]] = field(default_factory=list)  # per simulated hour, per arm
    seconds: dict[str, float] = field(default_factory=dict)  # per arm, time spent ranking and learning
    cleaned: int = 0  # the personalized arm's events through the cleaner
    cold_visits: list[int] = field(default_factory=list)  # per hour, the informed arm's visits before a first click
    rankers: dict[str, int] = field(default_factory=dict)  # the personalized arm's pages per ranking (ADR 0021)

    def window(self, arm: str, first_hour: int, last_hour: int) -> Window:
        total = Window()
        for hour in self.hours[first_hour:last_hour]:
            total.merge(hour[arm])
        return total

    def cold_share(self, last_hour: int) -> float:
        """The share of the visits up to `last_hour` made before the user's first click (in the informed
        arm's world, where a click comes soonest)."""
        sessions = self.window("informed", 0, last_hour).sessions
        return sum(self.cold_visits[:last_hour]) / sessions if sessions else 0.0

    def share(self, arm: str, first_hour: int, last_hour: int) -> float:
        """The arm's expected CTR over the oracle's, over the same visits."""
        oracle = self.window("oracle", first_hour, last_hour).expected_ctr
        return self.window(arm, first_hour, last_hour).expected_ctr / oracle if oracle else 0.0

    def regained(self, arm: str) -> dict[str, float]:
        p, shift = self.plan, self.plan.shift_day * 24
        before = self.share(arm, shift - 24, shift)
        dip = self.share(arm, shift, shift + p.dip_hours)
        recovered = self.share(arm, shift + 24 - p.recovered_hours, shift + 24)
        drop = before - dip
        return {"before": before, "dip": dip, "recovered": recovered,
                "regained": (recovered - dip) / drop if drop > 0 else 0.0}


def simulate(plan: LoopBenchPlan, frame: pd.DataFrame | None = None,
             say: Callable[[str], None] = lambda _line: None) -> LoopRun:
    frame = online_retail.load() if frame is None else frame
    catalog = Catalog.from_online_retail(frame)
    now = [START]
    started = time.perf_counter()
    model = trained_model(frame, catalog, START)
    say(f"  model: {len(model.item_ids):,} items, trained in {time.perf_counter() - started:.1f}s; catalogue "
        f"{len(catalog.item_ids):,} items ({int(catalog.new.sum())} new, arriving on day {plan.arrival_day + 1})")
    worlds = {arm: World(catalog, plan.users, plan.seed) for arm in ARMS}
    popularity = dict(zip(model.item_ids, model.popularity.astype(float), strict=True))
    arms = {"personalized": PersonalizedArm(model, lambda: now[0]), "popularity": PopularityArm(model),
            "bandit": BanditArm(worlds["bandit"], popularity, plan.seed), "oracle": OracleArm(worlds["oracle"]),
            "informed": InformedArm(worlds["informed"], model), "bayes": BayesArm(worlds["bayes"], plan.seed)}
    run = LoopRun(plan, seconds=dict.fromkeys(ARMS, 0.0))
    schedule = np.random.default_rng(plan.seed + 1)
    per_hour = plan.visits_per_day / 24
    for day in range(plan.days):
        if day == plan.arrival_day:
            for world in worlds.values():
                world.arrive()
        if day == plan.shift_day:
            for world in worlds.values():
                world.shift(plan.seed + 1000)
            arms["bayes"].shift()
        for hour in range(24):
            visits = int(schedule.poisson(per_hour))
            users = worlds["oracle"].visitors(visits, schedule)
            offsets = np.sort(schedule.uniform(0, 3600, visits))
            seeds = schedule.integers(0, 2**63, visits)
            figures = {arm: Window() for arm in ARMS}
            begin = START + timedelta(days=day, hours=hour)
            flushes = np.arange(plan.batch_minutes * 60, 3600 + 1, plan.batch_minutes * 60)
            for arm, policy in arms.items():
                ticked = time.perf_counter()
                world, next_flush = worlds[arm], 0
                for user, offset, seed in zip(users, offsets, seeds, strict=True):
                    while next_flush < len(flushes) and offset >= flushes[next_flush]:
                        now[0] = begin + timedelta(seconds=float(flushes[next_flush]))
                        policy.flush()
                        next_flush += 1
                    at = begin + timedelta(seconds=float(offset))
                    now[0] = at
                    shown = policy.rank(world.user_ids[user], at)
                    context = {"experiment": "ranking", "variant": arm} | getattr(policy, "page_context", {})
                    visit = world.respond(int(user), shown, at, context, np.random.default_rng(int(seed)))
                    figures[arm].add(visit)
                    policy.observe(visit, shown)
                now[0] = begin + timedelta(hours=1)
                policy.flush()
                run.seconds[arm] += time.perf_counter() - ticked
            run.hours.append(figures)
            run.cold_visits.append(arms["informed"].cold_visits - sum(run.cold_visits))
            run.cleaned = arms["personalized"].cleaned
            run.rankers = dict(arms["personalized"].rankers.most_common())
        say(f"  day {day + 1}: " + "  ".join(
            f"{arm} {run.window(arm, day * 24, day * 24 + 24).expected_ctr:.4f}" for arm in ARMS)
            + ("  (new items arrived)" if day == plan.arrival_day else "")
            + ("  (tastes shifted)" if day == plan.shift_day else ""))
    return run


def entries(run: LoopRun) -> list[dict]:
    p = run.plan
    before = p.shift_day * 24
    everything = p.days * 24
    personalized, popularity = run.regained("personalized"), run.regained("popularity")
    return [
        _entry("loop_oracle_share_before_shift", "share of the oracle's expected CTR",
               run.share("personalized", 0, before), "popularity_oracle_share_before_shift",
               run.share("popularity", 0, before), "higher"),
        _entry("loop_drop_regained_share", "share of the drop regained within a day",
               personalized["regained"], "popularity_drop_regained_share", popularity["regained"], "higher"),
        _entry("loop_ctr_vs_bandit", "CTR (clicks per shown slot)", run.window("personalized", 0, everything).ctr,
               "bandit_linucb_ctr", run.window("bandit", 0, everything).ctr, "higher"),
    ]


def _table(run: LoopRun, console: TextIO) -> None:
    p = run.plan
    shift = p.shift_day * 24
    spans = {"before the shift": (0, shift), f"first {p.dip_hours}h after": (shift, shift + p.dip_hours),
             "rest of shift day": (shift + p.dip_hours, shift + 24), "after": (shift + 24, p.days * 24)}
    console.write(f"{'arm':<14}" + "".join(f"{s:>22}" for s in spans) + f"{'CTR (realized)':>16}{'seconds':>9}\n")
    for arm in ARMS:
        row = "".join(f"{run.window(arm, a, b).expected_ctr:>12.4f} ({run.share(arm, a, b):>5.0%})"
                      for a, b in spans.values())
        console.write(f"{arm:<14}{row}{run.window(arm, 0, p.days * 24).ctr:>16.4f}{run.seconds[arm]:>9.1f}\n")
    console.write("(expected CTR per shown slot, and as a share of the oracle's over the same visits; informed: "
                  "the oracle's page from a user's first click on, the ceiling of any learner; bayes: a learner "
                  "that knows the world's rules, the most learning from clicks earns here)\n")
    console.write(f"visits made before the user's first click, before the shift: {run.cold_share(shift):.0%}\n")
    for arm in REGAINED_ARMS:
        r = run.regained(arm)
        console.write(f"{arm:<14} share the day before the shift {r['before']:.0%}, first {p.dip_hours}h after "
                      f"{r['dip']:.0%}, last {p.recovered_hours}h of that day {r['recovered']:.0%}: "
                      f"{r['regained']:.0%} of the drop regained\n")


def run(json_path: str, console: TextIO, plan: LoopBenchPlan | None = None) -> int:
    plan = plan or LoopBenchPlan()
    started = time.perf_counter()
    console.write(f"bench loop: {plan.users} simulated users, {plan.days} days of ~{plan.visits_per_day} visits, "
                  f"tastes shift on day {plan.shift_day + 1}, seed {plan.seed}\n")

    def say(line: str) -> None:
        console.write(line + "\n")
        console.flush()

    result = simulate(plan, say=say)
    _table(result, console)
    before = plan.shift_day * 24
    write_results(json_path, entries(result), console, plan=asdict(plan),
                  regained={arm: result.regained(arm) for arm in REGAINED_ARMS},
                  ceiling={"informed_oracle_share_before_shift": round(result.share("informed", 0, before), 4),
                           "bayes_oracle_share_before_shift": round(result.share("bayes", 0, before), 4),
                           "visits_before_a_first_click_share": round(result.cold_share(before), 4)},
                  pages_per_ranking=result.rankers,
                  seconds={"total": round(time.perf_counter() - started, 1),
                           **{arm: round(s, 1) for arm, s in result.seconds.items()}})
    return 0
