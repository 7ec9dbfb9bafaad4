"""FHIR date, dateTime and instant values as ranges of microseconds since the epoch.

A FHIR date is implicitly a range (`2024-03` is all of March), so both stored values
and search values become an inclusive [low, high] range; comparisons follow the
FHIR search rules on ranges. Values without a zone are read as UTC. Digits are ASCII
only (FHIR's regex is [0-9]; Python's \\d would read '٢٠٢٤' as 2024).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from email.utils import formatdate
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# FHIR R4's dateTime and instant forms as the specification's regexes write them (a year 0001
# or later, a time only with its zone, second 60 for a leap second), in a syntax Python's `re`
# and ECMA-262 read alike, for documents that state them (the OpenAPI document)
_YEAR = "([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_ZONE = "(Z|[+\\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_TIME = f"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?{_ZONE}"
FHIR_DATE_TIME = f"{_YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])({_TIME})?)?)?"
FHIR_INSTANT = f"{_YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1]){_TIME}"
_PATTERN = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,
)
_LAST_MICRO = timedelta(microseconds=59_999_999)  # from a minute's start to its last microsecond


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
        # FHIR allows second 60 (a leap second). Epoch microseconds, like POSIX time, have
        # no room for a 61st second, so the whole leap second (any fraction of it) is the
        # last microsecond of its minute: it stays in its minute, day, month and year, and
        # sorts after every other instant of that minute. (Read as 59.999999 plus a second,
        # it ran into the next day, and no search of its own day, month or year found it.)
        if second == 60:
            minute_start = datetime(year, month, day, hour, minute, tzinfo=tz)
            low = _micros(minute_start + _LAST_MICRO)
            return low, low
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


def instant(micros: int) -> str:
    """Microseconds since the epoch as a FHIR instant (now_instant's form): parse_range
    reads it back to the same microsecond."""
    return (_EPOCH + timedelta(microseconds=micros)).isoformat()


@lru_cache(maxsize=1024)
def _http_date_of_second(second: str) -> str:
    moment = datetime.fromisoformat(second).replace(tzinfo=UTC)
    return formatdate(moment.timestamp(), usegmt=True)


def http_date(instant_text: str) -> str | None:
    """A FHIR instant as an HTTP date (Last-Modified), None if it is not one. Versions
    written in one second share the answer: instants in now_instant's form (UTC) are
    looked up by their second, others parsed."""
    if instant_text.endswith("+00:00") and _PATTERN.fullmatch(instant_text):
        try:
            return _http_date_of_second(instant_text[:19])
        except ValueError:  # a leap second, say: parsed below
            pass
    parsed = parse_range(instant_text)
    return formatdate(parsed[0] / 1e6, usegmt=True) if parsed else None
