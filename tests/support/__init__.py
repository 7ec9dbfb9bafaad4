"""What the tests share, by job: the seed data (`seed`), the search of server logs for the
values the tests sent (`log_scan`), the `caretask serve` process (`server`), databases of
either engine (`databases`), HTTP client helpers (`clients`) and HTTP over a raw socket
(`rawhttp`). `tests/conftest.py` holds only the pytest fixtures and hooks built on them."""
