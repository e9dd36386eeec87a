"""The staff console in a real browser (console.md, issue 13): sign-in and sign-out, the idle
timeout, search, the timeline chart against the API's timeline, as-of after a correction,
recording through the forms (confirmation, refusals in Japanese next to the field, a double
submit recorded once), role limits, access review, and no My Number on any page but the
explicit reveal. Every screen is photographed under target/console-screenshots/."""

import datetime
import time
import urllib.parse

from conftest import MY_NUMBER, Server, seed, shot, sign_in


def intervals(page):
    return [
        (el.get_attribute("data-from"), el.get_attribute("data-to"))
        for el in page.locator('svg[data-testid="timeline"] [data-testid="interval"]').all()
    ]


def markers(page):
    return {
        int(el.get_attribute("data-sequence")): el.get_attribute("data-status")
        for el in page.locator('svg[data-testid="timeline"] [data-testid="event"]').all()
    }


def records(server, **query):
    status, body = server.api("GET", "/v1/access-records?" + urllib.parse.urlencode({**query, "limit": 1000}), token="kansa-ito")
    assert status == 200, body
    return body["records"]


def timeline(server, person_id):
    status, body = server.api("GET", f"/v1/persons/{person_id}/timeline")
    assert status == 200, body
    return body


def today():
    return datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=9))).date()


def resident(server, pid, moved_in="2020-04-01", birth="1990-01-01", kana="テスト　イチロウ"):
    server.event(pid, {"type": "registered", "effective_date": birth, "reported_date": birth, "name": "試験 一郎",
                       "name_kana": kana, "birth_date": birth, "sex": "1", "sex_on_back": False})
    if moved_in:
        server.event(pid, {"type": "moved_in", "effective_date": moved_in, "reported_date": moved_in,
                           "from": "other_prefecture", "household_id": "700"})


def test_sign_in_and_sign_out(page, server):
    sign_in(page, server, "clerk-suzuki")
    assert page.get_by_test_id("principal").inner_text() == "clerk-suzuki"
    session = [c for c in page.context.cookies() if c["name"] == "kokuho_session"]
    assert len(session) == 1 and session[0]["httpOnly"] and session[0]["sameSite"] == "Lax"
    shot(page, "01-search")
    page.get_by_test_id("sign-out").click()
    page.wait_for_load_state()
    assert "/console/sign-in" in page.url
    assert "サインアウトしました" in page.get_by_test_id("notice").inner_text()
    # The ended session opens nothing.
    page.goto(server.base + "/console/persons/1001")
    assert "/console/sign-in" in page.url
    kinds = [r["kind"] for r in records(server, actor="clerk-suzuki")]
    assert "sign_in" in kinds and "sign_out" in kinds
    shot(page, "00-sign-in")


def test_a_wrong_token_is_refused_and_recorded(page, server):
    page.goto(server.base + "/console/search")
    page.get_by_test_id("token").fill("kl_not-a-token")
    page.get_by_test_id("sign-in").click()
    assert "トークンが正しくない" in page.get_by_test_id("error").inner_text()
    refused = [r for r in records(server, actor="anonymous") if r["kind"] == "sign_in"]
    assert refused and refused[-1]["outcome"] == 401


def test_the_idle_timeout_signs_out(browser):
    s = Server(idle_seconds=2)
    try:
        context = browser.new_context(locale="ja-JP")
        page = context.new_page()
        sign_in(page, s, "clerk-suzuki")
        page.goto(s.base + "/console/search")
        assert "/console/search" in page.url
        time.sleep(3)
        page.goto(s.base + "/console/search")
        assert "/console/sign-in" in page.url and "reason=idle" in page.url
        assert "一定時間操作がなかった" in page.get_by_test_id("notice").inner_text()
        shot(page, "00-idle")
        context.close()
    finally:
        s.stop()


def test_search_by_kana_and_open_the_person(page, server):
    sign_in(page, server, "clerk-suzuki")
    page.get_by_test_id("name_kana").fill("ﾔﾏﾀﾞ")  # half-width kana is read as full-width
    page.get_by_test_id("search").click()
    rows = page.get_by_test_id("result")
    ids = sorted(rows.nth(i).get_attribute("data-person-id") for i in range(rows.count()))
    assert ids == ["1001", "1002"]
    # A name never travels in a URL.
    assert "%E3" not in page.url and "ﾔﾏﾀﾞ" not in page.url
    shot(page, "02-search-results")
    page.locator('[data-person-id="1001"] a').first.click()
    page.wait_for_load_state()
    assert page.url.endswith("/console/persons/1001")
    assert page.get_by_test_id("name").inner_text() == "山田 太郎"


def test_the_chart_shows_two_insured_periods_with_their_dates(page, server):
    sign_in(page, server, "clerk-suzuki", "/console/persons/1001")
    api = timeline(server, "1001")
    expected = [(i["from"], i["to"] or "") for i in api["intervals"]]
    assert len(expected) == 2
    assert intervals(page) == expected
    assert expected[0] == ("2010-04-01", "2015-06-01")
    assert expected[1][0] == "2020-01-10"
    assert markers(page) == {e["sequence"]: e["status"] for e in api["events"]}
    assert page.get_by_test_id("status-badge").inner_text() == "加入中"
    # The late report (reported 55 days after the move-in) is flagged.
    assert page.locator('[data-testid="event"][data-sequence="4"].late').count() == 1
    shot(page, "03-person")


def test_after_a_correction_the_chart_differs_between_as_of_before_and_now(page, server):
    resident(server, "1004", moved_in="2012-04-01")
    server.event("1004", {"type": "moved_out", "effective_date": "2016-03-01", "reported_date": "2016-03-01", "to": "other_prefecture"})
    time.sleep(1.1)
    before = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(1.1)
    server.event("1004", {"type": "corrected", "effective_date": today().isoformat(), "reported_date": today().isoformat(),
                          "target_sequence": 3, "replacement": {"type": "moved_out", "effective_date": "2016-02-01",
                                                                "reported_date": "2016-03-01", "to": "other_prefecture"}})
    sign_in(page, server, "clerk-suzuki", "/console/persons/1004")
    assert intervals(page) == [("2012-04-01", "2016-02-01")]
    assert markers(page)[3] == "corrected" and markers(page)[4] == "in_force"
    # The struck marker links to its correction.
    assert page.locator('a[href="#event-4"] [data-testid="event"][data-sequence="3"]').count() == 1
    shot(page, "04-person-corrected")
    page.goto(server.base + "/console/persons/1004?as_of=" + urllib.parse.quote(before))
    assert intervals(page) == [("2012-04-01", "2016-03-01")]
    assert markers(page) == {1: "in_force", 2: "in_force", 3: "in_force"}
    assert page.get_by_test_id("as-of-notice").is_visible()
    assert page.get_by_test_id("record-actions").count() == 0
    shot(page, "05-person-as-of")


def test_record_a_move_out_through_the_form_and_the_chart_closes(page, server):
    resident(server, "1005")
    sign_in(page, server, "clerk-tanaka", "/console/persons/1005")
    assert intervals(page)[-1][1] != "2026-01-01"
    day = (today() - datetime.timedelta(days=5)).isoformat()
    page.get_by_test_id("record-type").select_option("moved_out")
    page.get_by_test_id("record-button").click()
    page.get_by_test_id("field-effective_date").fill(day)
    page.get_by_test_id("field-reported_date").fill(today().isoformat())
    page.get_by_test_id("field-to").select_option("other_prefecture")
    shot(page, "06-record-form")
    page.get_by_test_id("confirm").click()
    assert "他都道府県" in page.get_by_test_id("confirm-table").inner_text()
    shot(page, "07-confirm")
    page.get_by_test_id("commit").click()
    page.wait_for_load_state()
    assert "/console/persons/1005" in page.url
    assert page.get_by_test_id("recorded").is_visible()
    assert intervals(page) == [("2020-04-01", day)]
    assert page.get_by_test_id("status-badge").inner_text() == "喪失"
    events = timeline(server, "1005")["events"]
    assert events[-1]["type"] == "moved_out" and events[-1]["effective_date"] == day
    shot(page, "08-recorded")


def test_a_refused_form_shows_the_japanese_message_next_to_the_field_and_keeps_the_input(page, server):
    resident(server, "1006")
    sign_in(page, server, "clerk-tanaka", "/console/record?type=name_changed&person_id=1006")
    page.get_by_test_id("field-name").fill("試験 二郎")
    page.get_by_test_id("field-name_kana").fill("shiken jiro")
    page.get_by_test_id("confirm").click()
    assert "カナ氏名はカタカナ" in page.get_by_test_id("error-name_kana").inner_text()
    # Next to its field, and what was typed is kept.
    assert page.locator("#f-name_kana ~ .field-error").count() == 1
    assert page.get_by_test_id("field-name").input_value() == "試験 二郎"
    assert page.get_by_test_id("field-name_kana").input_value() == "shiken jiro"
    shot(page, "09-refused")
    page.goto(server.base + "/console/record?type=employee_insurance_joined&person_id=1006")
    page.get_by_test_id("field-effective_date").fill("2021-05-10")
    page.get_by_test_id("field-reported_date").fill("2021-05-01")
    page.get_by_test_id("confirm").click()
    # A rule of the history: found at the commit, shown next to its field all the same.
    page.get_by_test_id("commit").click()
    assert "届出日が異動日より前" in page.get_by_test_id("error-reported_date").inner_text()
    assert page.get_by_test_id("field-effective_date").input_value() == "2021-05-10"
    assert page.get_by_test_id("field-reported_date").input_value() == "2021-05-01"
    # Another: a second move-in while resident.
    page.goto(server.base + "/console/record?type=moved_in&person_id=1006")
    page.get_by_test_id("field-effective_date").fill("2022-01-01")
    page.get_by_test_id("field-reported_date").fill("2022-01-01")
    page.get_by_test_id("field-from").select_option("abroad")
    page.get_by_test_id("field-household_id").fill("700")
    page.get_by_test_id("confirm").click()
    page.get_by_test_id("commit").click()
    page.wait_for_load_state()
    assert "既に住民として登録されています" in page.get_by_test_id("error-effective_date").inner_text()
    assert page.get_by_test_id("field-household_id").input_value() == "700"
    assert [e["type"] for e in timeline(server, "1006")["events"]] == ["registered", "moved_in"]


def test_a_double_submit_records_once(page, server):
    resident(server, "1008")
    sign_in(page, server, "clerk-tanaka", "/console/record?type=document_collected&person_id=1008")
    page.get_by_test_id("confirm").click()
    fields = page.eval_on_selector_all(
        '[data-testid="commit-form"] input[type="hidden"]', "els => els.map(e => [e.name, e.value])")
    form = dict(fields)
    first = page.request.post(server.base + "/console/record", form=form, max_redirects=0)
    second = page.request.post(server.base + "/console/record", form=form, max_redirects=0)
    assert first.status == 303 and second.status == 303
    assert first.headers["location"] == second.headers["location"]
    # And the browser's own double click on the button.
    page.get_by_test_id("commit").dblclick()
    page.wait_for_load_state()
    collected = [e for e in timeline(server, "1008")["events"] if e["type"] == "document_collected"]
    assert len(collected) == 1, collected


def test_an_inquiry_user_sees_no_record_buttons_and_a_forged_post_is_refused_and_recorded(page, server):
    sign_in(page, server, "rinji-sato", "/console/persons/1001")
    assert page.get_by_test_id("record-actions").count() == 0
    assert page.get_by_test_id("reveal-my-number").count() == 0
    shot(page, "10-inquiry")
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    forged = {"csrf": csrf, "form.type": "died", "form.person_id": "1001", "effective_date": today().isoformat(),
              "reported_date": today().isoformat(), "nonce": "f" * 32}
    r = page.request.post(server.base + "/console/record", form=forged, max_redirects=0)
    assert r.status == 403
    assert "died" not in [e["type"] for e in timeline(server, "1001")["events"]]
    refused = [x for x in records(server, actor="rinji-sato") if x["outcome"] == 403]
    assert refused and refused[-1]["screen"] == "異動入力（登録）" and refused[-1]["kind"] == "update"
    # The form page itself is refused too.
    page.goto(server.base + "/console/record?type=died&person_id=1001")
    assert "権限がありません" in page.content()


def test_an_auditor_finds_the_access_records_of_the_person_just_viewed(page, server, browser):
    sign_in(page, server, "clerk-suzuki", "/console/persons/1003")
    assert page.get_by_test_id("dv-warning").is_visible()
    shot(page, "11-dv-warning")
    page.goto(server.base + "/console/households/500")
    members = sorted(page.get_by_test_id("member").nth(i).get_attribute("data-person-id")
                     for i in range(page.get_by_test_id("member").count()))
    assert members == ["1001", "1002"]
    shot(page, "12-household")
    auditor = browser.new_context(locale="ja-JP", viewport={"width": 1280, "height": 900}).new_page()
    sign_in(auditor, server, "kansa-ito", "/console/access")
    auditor.get_by_test_id("access-person").fill("1003")
    auditor.get_by_test_id("access-search").click()
    rows = auditor.get_by_test_id("access-record")
    seen = [(rows.nth(i).get_attribute("data-actor"), rows.nth(i).get_attribute("data-screen")) for i in range(rows.count())]
    assert ("clerk-suzuki", "資格履歴照会") in seen
    assert "閲覧制限" in auditor.get_by_test_id("access-records").inner_text()
    shot(auditor, "13-access-records")
    auditor.goto(server.base + "/console/access/unusual")
    shot(auditor, "14-unusual")
    auditor.goto(server.base + "/console/status")
    assert int(auditor.get_by_test_id("log-head").inner_text()) > 10
    shot(auditor, "15-status")
    # An auditor reads no resident.
    auditor.goto(server.base + "/console/persons/1003")
    assert "権限がありません" in auditor.content()
    auditor.context.close()


def test_no_page_carries_a_my_number_but_the_explicit_reveal(page, server):
    sign_in(page, server, "clerk-tanaka")
    pages = []
    page.get_by_test_id("name_kana").fill("ヤマダ")
    page.get_by_test_id("search").click()
    pages.append(page.content())
    for path in ["/console/persons/1002", "/console/households/500", "/console/record?type=name_changed&person_id=1002",
                 "/console/record?type=corrected&person_id=1002&target=1", "/console/status"]:
        page.goto(server.base + path)
        pages.append(page.content())
    page.goto(server.base + "/console/record?type=name_changed&person_id=1002")
    page.get_by_test_id("field-name").fill("山田 花")
    page.get_by_test_id("field-name_kana").fill("ヤマダ　ハナ")
    page.get_by_test_id("confirm").click()
    pages.append(page.content())
    for html in pages:
        assert MY_NUMBER not in html
        assert "1234 5678 9018" not in html
    page.goto(server.base + "/console/persons/1002")
    page.on("dialog", lambda d: d.accept())
    page.get_by_test_id("reveal-my-number").click()
    page.wait_for_load_state()
    assert page.get_by_test_id("my-number").inner_text() == MY_NUMBER
    shot(page, "16-my-number-reveal")
    revealed = [r for r in records(server, person_id="1002") if r["my_number"]]
    assert revealed and revealed[-1]["screen"] == "個人番号表示" and revealed[-1]["actor"] == "clerk-tanaka"
