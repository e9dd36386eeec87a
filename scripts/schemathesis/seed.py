#!/usr/bin/env python3
"""Seeds a fresh ledger through its API for scripts/schemathesis.sh, so that reads find
persons, households, cards and audit entries: the ids are the OpenAPI document's examples.
Every date is in the past of any clock this runs under.

Usage: seed.py BASE_URL, with KOKUHO_ST_TOKEN a token whose roles record events (the script's
own). Prints the log head once the audit chain has signed it.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

BASE = sys.argv[1].rstrip("/")
TOKEN = os.environ["KOKUHO_ST_TOKEN"]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def record(stream, stream_id, event):
    status, answer = call("POST", f"/v1/{stream}/{stream_id}/events", event)
    if status != 201:
        sys.exit(f"seeding failed: {stream} {stream_id} {event['type']}: {status} {answer}")
    return answer


def registered(name, kana, birth, sex, **extra):
    return dict(type="registered", effective_date="2020-04-01", name=name, name_kana=kana, birth_date=birth, sex=sex, **extra)


P1, P2, P3, P4 = "100000000001", "100000000002", "100000000003", "100000000004"
H1, H2 = "200000000001", "200000000002"

record("persons", P1, registered("山田 太郎", "ヤマダ　タロウ", "1980-05-15", "1", my_number="123456789018"))
record("persons", P1, {"type": "moved_in", "effective_date": "2020-04-01", "from": "other_prefecture", "household_id": H1})
record("persons", P2, registered("山田 花子", "ﾔﾏﾀﾞ ﾊﾅｺ", "1982-08-01", "2"))
record("persons", P2, {"type": "moved_in", "effective_date": "2020-04-01", "from": "same_prefecture", "qualified_on": "2019-07-01", "household_id": H1})
record("households", H1, {"type": "household_head_changed", "effective_date": "2020-04-01", "person_id": P1})
record("households", H1, {"type": "nhi_head_designated", "effective_date": "2020-04-02", "person_id": P2})
record("persons", P3, registered("佐藤 次郎", "サトウ　ジロウ", "1960-01-20", "1", real_name="佐藤 二郎", real_name_kana="サトウ　ジロウ"))
record("persons", P3, {"type": "moved_in", "effective_date": "2020-04-01", "from": "abroad", "household_id": H2})
record("persons", P3, {"type": "employee_insurance_joined", "effective_date": "2021-10-01", "reported_date": "2021-10-20"})
last = record("persons", P4, registered("鈴木 一", "スズキ　ハジメ", "2000-02-29", "2", sex_on_back=False))

head = last["last_position"]
deadline = time.monotonic() + 30
while True:
    status, answer = call("GET", "/v1/audit/checkpoint")
    if status == 200 and answer["checkpoint"]["size"] >= head:
        break
    if time.monotonic() > deadline:
        sys.exit(f"the audit chain did not sign position {head} within 30 s: {status} {answer}")
    time.sleep(0.5)
print(head)
