"""Online Retail invoice lines as feedback events, exactly as a real client would send them.

Purchases are implicit positive feedback (value = quantity), cancellations (invoice "C...") implicit
negative feedback. Nothing is cleaned here: lines without a customer, odd stock codes, negative
quantities and prices go to the API as they are, and the API and the cleaner deal with them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from feedbackloop.schemas.registry import CURRENT_VERSION

_NAMESPACE = uuid.UUID("6f6e6c69-6e65-7265-7461-696c2d666c00")

# The dataset has no categories. A client's catalog would have them, so derive one from the product
# description: the first category (in this order) with a keyword among the description's words.
CATEGORY_KEYWORDS: tuple[tuple[str, frozenset[str]], ...] = tuple((name, frozenset(words.split())) for name, words in (
    ("christmas", "CHRISTMAS XMAS ADVENT SNOWFLAKE REINDEER SANTA"),
    ("bags", "BAG BAGS SHOPPER TOTE"),
    ("candles and lights", "CANDLE CANDLES T-LIGHT HOLDER LANTERN LIGHTS LIGHT NIGHTLIGHT"),
    ("kitchen and tableware", "MUG CUP CUPS SAUCER BOWL PLATE PLATES TEAPOT CAKE BAKING CUTLERY JAR TIN TINS "
                              "NAPKINS LUNCH BOTTLE COFFEE TEA EGG JAM KITCHEN PANTRY SPOON TRAY GLASS"),
    ("stationery and wrap", "CARD CARDS WRAP PAPER PENCILS PEN NOTEBOOK STICKER STICKERS TISSUES RIBBONS "
                            "ENVELOPE CHALK"),
    ("toys and party", "TOY DOLLY DOLL GAME JIGSAW PARTY BIRTHDAY PLAYHOUSE SPACEBOY CHILDRENS BALLOONS"),
    ("storage", "BOX BOXES CASES DRAWER STORAGE BASKET CABINET CRATE"),
    ("home decor", "SIGN DECORATION BUNTING FRAME CLOCK MIRROR DOORMAT GARLAND HOOK KNOB WALL CUSHION "
                   "COVER ORNAMENT WREATH VASE"),
    ("garden", "GARDEN PLANT FLOWER WATERING BIRD"),
    ("jewellery and accessories", "NECKLACE EARRINGS BRACELET RING HAIR CLIP PURSE UMBRELLA"),
))
OTHER_CATEGORY = "other"


def category_of(description: object) -> str:
    words = set(description.upper().split()) if isinstance(description, str) else set()
    return next((name for name, keywords in CATEGORY_KEYWORDS if words & keywords), OTHER_CATEGORY)


def load() -> pd.DataFrame:
    with resources.as_file(resources.files(__package__).joinpath("online_retail.parquet")) as path:
        return pd.read_parquet(path)


def to_events(frame: pd.DataFrame, shift_to: datetime | None = None) -> list[dict[str, Any]]:
    """One event per invoice line, in time order. `shift_to` moves the whole timeline so the last
    line falls at that instant (the data ends in 2011; the cleaner judges age against arrival)."""
    frame = frame.sort_values("InvoiceDate", kind="stable")
    times = pd.to_datetime(frame["InvoiceDate"])
    if shift_to is not None:
        times = times + (pd.Timestamp(shift_to).tz_convert(None) - times.max())
    stamps = times.dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
    invoice = frame["InvoiceNo"].astype(str).to_numpy()
    stock = frame["StockCode"].astype(str).to_numpy()
    quantity = frame["Quantity"].to_numpy(dtype=float)
    price = frame["UnitPrice"].to_numpy(dtype=float)
    customer = frame["CustomerID"].to_numpy(dtype=float)
    country = frame["Country"].astype(str).to_numpy()
    by_description = {d: category_of(d) for d in frame["Description"].dropna().unique()}
    category = frame["Description"].map(by_description).fillna(OTHER_CATEGORY).to_numpy()
    cancel = np.char.startswith(invoice.astype(str), "C")
    events = []
    for i in range(len(frame)):
        # identical lines get the same id: the dataset's exact duplicates become duplicate deliveries
        line = f"{invoice[i]}|{stock[i]}|{quantity[i]:g}|{stamps[i]}|{price[i]:g}|{customer[i]:g}"
        event: dict[str, Any] = {
            "event_id": str(uuid.uuid5(_NAMESPACE, line)),
            "item_id": stock[i],
            "event_type": "cancel" if cancel[i] else "purchase",
            "value": float(abs(quantity[i]) if cancel[i] else quantity[i]),
            "timestamp": stamps[i],
            "schema_version": CURRENT_VERSION,
            "context": {"session_id": invoice[i], "country": country[i], "category": category[i],
                        "price": float(price[i])},
        }
        if not np.isnan(customer[i]):
            event["user_id"] = f"c{int(customer[i])}"
        events.append(event)
    return events
