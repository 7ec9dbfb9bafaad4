"""FHIR date, dateTime and instant values as ranges of microseconds since the epoch.

A FHIR date is implicitly a range (`2024-03` is all of March), so both stored values
and search values become an inclusive [low, high] range; comparisons follow the
FHIR search rules on ranges. Values without a zone are read as UTC.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PATTERN = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def _micros(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_range(value: str) -> tuple[int, int] | None:
    """Return the inclusive microsecond range a FHIR date/dateTime covers, or None."""
    match = _PATTERN.fullmatch(value)
    if match is None:
        return None
    g = match.groupdict()
    try:
        year = int(g["y"])
        month = int(g["m"] or 1)
        day = int(g["d"] or 1)
        hour = int(g["H"] or 0)
        minute = int(g["M"] or 0)
        second = int(g["S"] or 0)
        frac = g["f"] or ""
        micro = int((frac + "000000")[:6]) if frac else 0
        tz = UTC
        if g["tz"] and g["tz"] != "Z":
            sign = 1 if g["tz"][0] == "+" else -1
            hh, mm = int(g["tz"][1:3]), int(g["tz"][4:6])
            if hh > 14 or mm > 59:
                return None
            tz = timezone(timedelta(minutes=sign * (hh * 60 + mm)))
        if second == 60:  # FHIR allows a leap second; treat it as the last microsecond
            second, micro = 59, 999_999
        start = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError:
        return None
    if g["m"] is None:
        length = timedelta(days=366 if calendar.isleap(year) else 365)
    elif g["d"] is None:
        length = timedelta(days=calendar.monthrange(year, month)[1])
    elif g["H"] is None:
        length = timedelta(days=1)
    elif g["S"] is None:
        length = timedelta(minutes=1)
    elif not frac:
        length = timedelta(seconds=1)
    else:
        length = timedelta(microseconds=10 ** (6 - min(len(frac), 6)))
    low = _micros(start)
    # the arithmetic in microseconds: a range ending after 9999-12-31 overflowed datetime
    return low, max(low, low + length // timedelta(microseconds=1) - 1)


def now_instant() -> tuple[str, int]:
    """The current time as a FHIR instant string and as microseconds since the epoch."""
    now = datetime.now(UTC)
    return now.isoformat(), _micros(now)
