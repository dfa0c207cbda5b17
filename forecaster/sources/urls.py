"""Database URLs (a SQL source's `url:`, the state store's `state:`), parsed strictly and shown
without their password.

A URL holds a password more often than not, and a URL that does not parse cannot be masked by
the usual means (SQLAlchemy's `render_as_string(hide_password=True)` needs a parsed URL): an
unescaped `@` in a password makes SQLAlchemy read the password's tail as the host, and a `#`
after a space starts a YAML comment that cuts the URL short. So a URL is accepted only when it
parses cleanly, and a message shows it masked, or only its scheme when it does not parse.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]*):")
ENCODE_HINT = "percent-encode @ # / : ? in the user name and password (%40 %23 %2F %3A %3F)"
EXAMPLE = "postgresql://user:password@host:5432/db or sqlite:///path/file.db"


class URLProblem(ValueError):
    """The URL does not parse cleanly; the message names no part of it but its scheme."""


def parse_database_url(text: str) -> URL:
    """`text` as a SQLAlchemy URL; URLProblem (one line, no secret) when it does not parse cleanly."""
    if not isinstance(text, str) or "\x00" in text:
        raise URLProblem(f"the URL ({_scheme_of(text)}) does not parse; use e.g. {EXAMPLE}")
    try:
        url = make_url(text)
        port = url.port  # SQLAlchemy 2.0 reads the port at parse time; later versions may not
    except (ArgumentError, ValueError, TypeError):
        raise URLProblem(f"the URL ({_scheme_of(text)}) does not parse (is the port a number?); use e.g. {EXAMPLE}; "
                         f"{ENCODE_HINT}") from None
    if "@" in (url.host or "") or ("@" in (url.database or "") and url.get_backend_name() != "sqlite"):
        # `user:p@ss@host`: SQLAlchemy takes `p` as the password and `ss@host` as the host.
        raise URLProblem(f"the URL ({_scheme_of(text)}) has an unescaped '@' in its password or user name; "
                         f"{ENCODE_HINT}")
    if port is not None and not 0 < port < 65536:
        raise URLProblem(f"the URL ({_scheme_of(text)}) has port {port}, not a TCP port (1-65535); use e.g. {EXAMPLE}")
    return url


def shown_url(text: str) -> str:
    """`text` for a message: the URL with its password as `***` when it parses cleanly, else only
    its scheme and "(URL does not parse)"."""
    try:
        return parse_database_url(text).render_as_string(hide_password=True)
    except URLProblem:
        return f"{_scheme_of(text)} (the URL does not parse)"


def _scheme_of(text: object) -> str:
    """`postgresql://...` for a message: the scheme only, never the rest."""
    match = _SCHEME.match(text) if isinstance(text, str) else None
    return f"{match.group(1)}://..." if match else "no scheme such as postgresql://"
