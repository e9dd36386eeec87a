"""Schemathesis hooks of scripts/schemathesis.sh.

They teach the generator the few rules of the API that a JSON Schema cannot state (each is
described in the OpenAPI document's text), so that every request the generator calls valid is
one the server must accept:

- `my-number`: a My Number's last digit is a check digit (domain.md §8);
- `min_position` / `X-Min-Position` must not be beyond the log head (400 `invalid_min_position`):
  valid values are brought into 0..=KOKUHO_ST_LOG_HEAD, the head after seeding (the log only
  grows);
- an inclusion proof needs `position` ≤ `size`, a consistency proof `from` ≤ `to`
  (400 `invalid_proof_request`): a valid pair in the wrong order is swapped;
- the feed's `wait` (0–30 s) is kept to 0 or 1 s, so that a page after the head does not hold
  the run for half a minute;
- a valid `Idempotency-Key` is made unique per request, so that a generated key used twice
  does not turn every later write into 422 `idempotency_key_reused` and hide the domain rules;
- the unusual-access report needs `from` before `to`, at most 31 days apart (400
  `invalid_range`): a valid `from` gets a `to` one day later.

The run's credentials are the script's two tokens (KOKUHO_ST_TOKEN with every role that reaches
data, KOKUHO_ST_ADMIN_TOKEN with `admin`, which the role table keeps apart): the admin token for
the admin routes (`/v1/tokens`, `/v1/role-table`), the other for everything else. A generated
`DELETE /v1/tokens/{name}` naming one of them is dropped, so the run never revokes its own
credential.

The CSV and JSON Lines exports are deserialized as text (their schema is a string).

Cases the HTTP client cannot send at all (a header value with leading whitespace or a line
break, which no HTTP message can carry either) are dropped instead of erroring.

Values the generator made invalid on purpose (negative cases) are left alone: only integers in
the documented range are touched.
"""

import itertools
import os
import re
from collections.abc import MutableMapping
from datetime import date, datetime, timedelta, timezone

import schemathesis
from hypothesis import strategies as st

LOG_HEAD = int(os.environ.get("KOKUHO_ST_LOG_HEAD", "0"))
I64_MAX = 2**63 - 1
TOKEN = os.environ["KOKUHO_ST_TOKEN"]
ADMIN_TOKEN = os.environ["KOKUHO_ST_ADMIN_TOKEN"]
OWN_TOKEN_NAMES = set(os.environ["KOKUHO_ST_TOKEN_NAMES"].split(","))
ADMIN_PATHS = r"^/v1/(tokens|role-table)"


def _bearer(case, token):
    case.headers = case.headers or {}
    case.headers["Authorization"] = f"Bearer {token}"


@schemathesis.auth(refresh_interval=None).apply_to(path_regex=ADMIN_PATHS)
class AdminToken:
    def get(self, case, context):
        return ADMIN_TOKEN

    def set(self, case, data, context):
        _bearer(case, data)


@schemathesis.auth(refresh_interval=None).skip_for(path_regex=ADMIN_PATHS)
class Token:
    def get(self, case, context):
        return TOKEN

    def set(self, case, data, context):
        _bearer(case, data)


@schemathesis.deserializer("text/csv", "application/jsonl")
def _as_text(ctx, response):
    return response.content.decode("latin-1")


def _check_digit(first_eleven):
    # Pn is the n-th digit from the right, Qn = n + 1 for n ≤ 6, n − 5 above.
    s = sum(first_eleven[11 - n] * (n + 1 if n <= 6 else n - 5) for n in range(1, 12))
    r = s % 11
    return 0 if r <= 1 else 11 - r


schemathesis.openapi.format(
    "my-number",
    st.lists(st.integers(0, 9), min_size=11, max_size=11).map(
        lambda d: "".join(map(str, d)) + str(_check_digit(d))
    ),
)


def _as_int(value):
    """The integer a generated parameter value stands for, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _replace(container, key, new):
    container[key] = str(new) if isinstance(container[key], str) else new


def _clamp_position(container, key):
    if not container or key not in container:
        return
    n = _as_int(container[key])
    if n is not None and 0 <= n <= I64_MAX and n > LOG_HEAD:
        _replace(container, key, n % (LOG_HEAD + 1))


def _order(container, low, high):
    if not container or low not in container or high not in container:
        return
    a, b = _as_int(container[low]), _as_int(container[high])
    if a is not None and b is not None and 1 <= b < a <= I64_MAX:
        _replace(container, low, b)
        _replace(container, high, a)


_SENDABLE_HEADER = re.compile(r"^\S[^\r\n]*$|^$")  # what `requests` sends
_VALID_KEY = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?$")
_KEY_SUFFIX = itertools.count(1)


def _instant(value):
    """The instant a valid `from`/`to` of the access records stands for (a day is its start in
    Asia/Tokyo), or None."""
    if not isinstance(value, str):
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=timezone(timedelta(hours=9)))
        v = value.replace("\u2212", "-").replace("t", "T").replace("z", "Z")
        m = re.match(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:)(\d\d)(\.\d+)?(.*)$", v)
        if not m:
            return None
        offset = m.group(5)
        if re.match(r"^ \d\d:\d\d$", offset):  # an unencoded `+` that arrived as a space
            offset = "+" + offset[1:]
        second = min(int(m.group(3)), 59)
        fraction = (m.group(4) or "")[:7]
        return datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{second:02}{fraction}{offset.replace('Z', '+00:00')}")
    except ValueError:
        return None


def _unusual_range(query):
    if not query or "from" not in query or not isinstance(query["from"], str):
        return
    if not re.match(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}", query["from"]):
        return  # not a valid value: left for the server to refuse
    start = _instant(query["from"])
    end = _instant(query["to"]) if "to" in query else datetime.now(timezone.utc)
    if "to" in query and end is None and not re.match(r"^0000-", str(query["to"])):
        return
    try:
        if start is None or end is None or not 1 < start.year < 9990 or not 1 < end.year < 9990:
            raise ValueError("at the edge of the calendar")
        if not start < end <= start + timedelta(days=31):
            end = (start + timedelta(days=1)).astimezone(timezone.utc)
            query["to"] = end.isoformat(timespec="microseconds").replace("+00:00", "Z")  # years < 1000 zero-padded
    except (ValueError, OverflowError):
        # Year 0 (valid here, not to Python) and the last days of 9999: a plain valid range.
        if start is not None or query["from"].startswith("0000-"):
            query["from"], query["to"] = "2000-01-01", "2000-01-02"


@schemathesis.hook
def filter_case(context, case):
    headers = case.headers if isinstance(case.headers, MutableMapping) else {}
    if case.method.upper() == "DELETE" and case.operation.path == "/v1/tokens/{name}":
        name = case.path_parameters.get("name") if isinstance(case.path_parameters, MutableMapping) else None
        if name in OWN_TOKEN_NAMES:
            return False
    return all(not isinstance(v, str) or _SENDABLE_HEADER.match(v) for v in headers.values())


@schemathesis.hook
def map_case(context, case):
    query = case.query if isinstance(case.query, MutableMapping) else None
    headers = case.headers if isinstance(case.headers, MutableMapping) else None
    _clamp_position(query, "min_position")
    if headers:
        for name in list(headers):
            if name.lower() == "x-min-position":
                _clamp_position(headers, name)
        for name in list(headers):
            value = headers[name]
            if name.lower() == "idempotency-key" and isinstance(value, str) and _VALID_KEY.match(value):
                headers[name] = f"{value[:240]}~{next(_KEY_SUFFIX)}"
    path = case.operation.path
    if path == "/v1/audit/proof/inclusion":
        _order(query, "position", "size")
    elif path == "/v1/audit/proof/consistency":
        _order(query, "from", "to")
    elif path == "/v1/access-records/unusual":
        _unusual_range(query)
    elif path == "/v1/feed" and query and "wait" in query:
        n = _as_int(query["wait"])
        if n is not None and 0 <= n <= 30:
            _replace(query, "wait", n % 2)
    return case
