"""HTTP-dates (RFC 9110 section 5.6.7): the three formats a recipient must accept."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime

_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
_IMF = re.compile(rf"{_DAY}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
# obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
_RFC850 = re.compile(rf"{_LONG_DAY}, ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT")
# obsolete asctime: Sun Nov  6 08:49:37 1994
_ASCTIME = re.compile(rf"{_DAY} {_MONTH} ([ 0-9][0-9]) {_TIME} ([0-9]{{4}})")
# the three forms as one pattern (for the OpenAPI document; it reads the same in ECMA-262)
PATTERN = "^(" + "|".join(p.pattern for p in (_IMF, _RFC850, _ASCTIME)) + ")$"


def _seconds(year: int, month: str, day: str, hour: str, minute: str, second: str) -> int | None:
    try:
        moment = datetime(
            year, _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError:
        return None
    return int(moment.timestamp())


def parse_http_date(text: str, now_year: int | None = None) -> int | None:
    """Seconds since the epoch of an HTTP-date, or None when `text` is not one. A two-digit
    year more than 50 years ahead of `now_year` (default: this year) is in the past
    century, as RFC 9110 says."""
    text = text.strip()
    if match := _IMF.fullmatch(text):
        day, month, year, *clock = match.groups()
        return _seconds(int(year), month, day, *clock)
    if match := _RFC850.fullmatch(text):
        day, month, short, *clock = match.groups()
        this_year = now_year if now_year is not None else datetime.now(UTC).year
        year = 2000 + int(short)
        if year > this_year + 50:
            year -= 100
        return _seconds(year, month, day, *clock)
    if match := _ASCTIME.fullmatch(text):
        month, day, *clock, year = match.groups()
        return _seconds(int(year), month, day.strip(), *clock)
    return None
