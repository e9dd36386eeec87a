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
  does not turn every later write into 422 `idempotency_key_reused` and hide the domain rules.

Cases the HTTP client cannot send at all (a header value with leading whitespace or a line
break, which no HTTP message can carry either) are dropped instead of erroring.

Values the generator made invalid on purpose (negative cases) are left alone: only integers in
the documented range are touched.
"""

import itertools
import os
import re
from collections.abc import MutableMapping

import schemathesis
from hypothesis import strategies as st

LOG_HEAD = int(os.environ.get("KOKUHO_ST_LOG_HEAD", "0"))
I64_MAX = 2**63 - 1


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


@schemathesis.hook
def filter_case(context, case):
    headers = case.headers if isinstance(case.headers, MutableMapping) else {}
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
    elif path == "/v1/feed" and query and "wait" in query:
        n = _as_int(query["wait"])
        if n is not None and 0 <= n <= 30:
            _replace(query, "wait", n % 2)
    return case
