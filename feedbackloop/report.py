"""`feedbackloop report`: one self-contained HTML page (inline SVG plots, no script, no network) about
the loop from its own stores: engagement over time per experiment arm, quarantine reasons, model
metrics by published version, and the adjust function's rule decisions and drift events.

`collect` reads the stores (DuckDB over the lake, DynamoDB for the registry and decisions);
`render` is pure: data in, HTML out."""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

ARM_COLOURS = {"personalized": "#1b7837", "popularity": "#762a83"}


@dataclass
class ReportData:
    title: str
    generated_at: datetime
    engagement: pd.DataFrame  # period_start, variant, impressions, clicks, ctr, sessions, conversion_rate
    quarantine: pd.DataFrame  # reason, records
    models: pd.DataFrame  # version, published_at, ndcg_model, ndcg_popularity
    decisions: pd.DataFrame  # decided_at, rule, scope, outcome, value, threshold, result
    drift: pd.DataFrame  # detected_at, stream, mean_before, mean_after
    notes: list[tuple[str, str]] = field(default_factory=list)  # (heading, preformatted text)


def render(data: ReportData) -> str:
    sections = [
        _section("Engagement over time, per arm of the ranking experiment",
                 _svg(_engagement_plot, data.engagement) if not data.engagement.empty else _empty("no engagement yet"),
                 "CTR (clicks / views) per arm from the engagement layer: hourly (thin) and over the last 12 "
                 "hours (thick); the dashed line is the 5% threshold of the segment-ctr-low rule."),
        _section("Quarantine by reason",
                 _svg(_quarantine_plot, data.quarantine) if not data.quarantine.empty
                 else _empty("nothing quarantined"),
                 "Every record the cleaner did not pass, by its typed reason (duplicates included)."),
        _section("Model metrics by published version",
                 (_svg(_models_plot, data.models) + _table(data.models)) if not data.models.empty
                 else _empty("no model published"),
                 "Hold-out NDCG@10 of each published model (its own user vectors, and ranking as serving does: "
                 "what the gate compares) against popularity on the same hold-out. Popularity scores well where "
                 "half the users were shown popular items: the logged data favours what was shown."),
        _section("Rule decisions and drift events",
                 (_svg(_timeline_plot, data.decisions, data.drift) if not (data.decisions.empty and data.drift.empty)
                  else _empty("no decisions recorded"))
                 + _table(data.decisions[data.decisions["outcome"].isin(["fire", "deferred", "cooldown"])]
                          if not data.decisions.empty else data.decisions)
                 + _table(data.drift),
                 "What the adjust function did: rules that fired or were deferred, and ADWIN drift events."),
    ]
    sections += [_section(heading, f"<pre>{html.escape(text)}</pre>", "") for heading, text in data.notes]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(data.title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(data.title)}</h1>"
            f"<p class='meta'>generated {data.generated_at:%Y-%m-%d %H:%M} UTC from the loop's own stores</p>"
            + "".join(sections) + "</body></html>")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}"
        ".meta,.caption{color:#666}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}"
        "td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}pre{background:#f6f6f6;padding:1em;"
        "white-space:pre-wrap;font-size:.8em}svg{max-width:100%;height:auto}")


def _section(heading: str, body: str, caption: str) -> str:
    note = f"<p class='caption'>{html.escape(caption)}</p>" if caption else ""
    return f"<section><h2>{html.escape(heading)}</h2>{note}{body}</section>"


def _empty(text: str) -> str:
    return f"<p><em>{html.escape(text)}</em></p>"


def _table(frame: pd.DataFrame, limit: int = 30) -> str:
    if frame.empty:
        return ""
    shown = frame.tail(limit)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in shown.itertuples(index=False))
    more = f"<p class='caption'>last {limit} of {len(frame)}</p>" if len(frame) > limit else ""
    return f"<table><tr>{head}</tr>{rows}</table>{more}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime | pd.Timestamp):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


def _svg(plot, *frames: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 3.6))
    try:
        plot(axes, *frames)
        figure.tight_layout()
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg")
    finally:
        plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _engagement_plot(axes, frame: pd.DataFrame) -> None:
    for variant, rows in frame.sort_values("period_start").groupby("variant"):
        colour = ARM_COLOURS.get(variant)
        axes.plot(rows["period_start"], rows["ctr"], color=colour, linewidth=0.6, alpha=0.35)
        smooth = (rows["clicks"].rolling(12, min_periods=1).sum()
                  / rows["impressions"].rolling(12, min_periods=1).sum())  # the last 12 hours' CTR
        axes.plot(rows["period_start"], smooth, label=f"{variant} (12-hour)", color=colour, linewidth=1.8)
    axes.axhline(0.05, linestyle="--", color="#999", linewidth=0.8)
    axes.set_ylabel("CTR")
    axes.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)


def _quarantine_plot(axes, frame: pd.DataFrame) -> None:
    ordered = frame.sort_values("records")
    axes.barh(ordered["reason"], ordered["records"], color="#b35806")
    axes.set_xscale("log")
    axes.set_xlabel("records (log scale)")
    for y, value in enumerate(ordered["records"]):
        axes.text(value, y, f" {value:,}", va="center", fontsize=8)


def _models_plot(axes, frame: pd.DataFrame) -> None:
    x = range(len(frame))
    axes.plot(x, frame["ndcg_model"], marker="o", label="feedback MF (published)", color="#1b7837")
    if frame["ndcg_served"].notna().any():
        axes.plot(x, frame["ndcg_served"], marker="^", label="as served (the gate's number)", color="#5aae61")
    axes.plot(x, frame["ndcg_popularity"], marker="s", label="popularity on the same hold-out", color="#999")
    axes.set_xticks(list(x), [str(v)[-14:] for v in frame["version"]], rotation=20, fontsize=7)
    axes.set_ylabel("NDCG@10")
    axes.legend(loc="best")
    axes.grid(alpha=0.3)


def _timeline_plot(axes, decisions: pd.DataFrame, drift: pd.DataFrame) -> None:
    lanes: list[str] = []
    acted = decisions[decisions["outcome"].isin(["fire", "deferred"])] if not decisions.empty else decisions
    for outcome, marker, colour in (("fire", "^", "#d73027"), ("deferred", "x", "#fc8d59")):
        rows = acted[acted["outcome"] == outcome] if not acted.empty else acted
        for rule, group in rows.groupby("rule") if not rows.empty else []:
            lane = f"rule {rule}"
            if lane not in lanes:
                lanes.append(lane)
            axes.scatter(group["decided_at"], [lanes.index(lane)] * len(group), marker=marker, color=colour,
                         label=outcome if outcome not in axes.get_legend_handles_labels()[1] else None)
    for stream, group in drift.groupby("stream") if not drift.empty else []:
        lane = f"drift {stream}"
        lanes.append(lane)
        axes.scatter(group["detected_at"], [lanes.index(lane)] * len(group), marker="D", color="#4575b4",
                     label="drift" if "drift" not in axes.get_legend_handles_labels()[1] else None)
    axes.set_yticks(range(len(lanes)), lanes, fontsize=8)
    axes.set_ylim(-0.5, max(len(lanes), 1) - 0.5)
    axes.grid(alpha=0.3)
    if lanes:
        axes.legend(loc="upper left", fontsize=8)


def models_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Registry records (one per published version) -> version, published_at, NDCG@10 of the model and
    of the popularity baseline on its hold-out."""
    rows = []
    for record in sorted(records, key=lambda r: r.get("published_at", "")):
        metrics = record.get("metrics")
        metrics = json.loads(metrics) if isinstance(metrics, str) else (metrics or {})
        ranking = metrics.get("ranking") or {}
        rows.append({"version": record["version"], "published_at": record.get("published_at"),
                     "ndcg_model": (ranking.get("model") or {}).get("ndcg_at_10"),
                     "ndcg_served": (ranking.get("served") or {}).get("ndcg_at_10"),
                     "ndcg_popularity": (ranking.get("popularity") or {}).get("ndcg_at_10")})
    return pd.DataFrame(rows, columns=["version", "published_at", "ndcg_model", "ndcg_served", "ndcg_popularity"])
