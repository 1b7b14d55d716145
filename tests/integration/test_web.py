"""The console over HTTP: browser sessions, their cookies, CSRF, languages, the second
factor, and the refusals — on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import select

from gateway.db.models import BrowserSession, OrganizationStatus, OrganizationType
from gateway.identity.sessions import SessionService
from sandbox.identifiers.credit_code import check_character
from tests.webconsole import NEW_PASSWORD, Console, form_token, session_cookie


def test_pages_send_the_anonymous_to_sign_in_and_back(console: Console) -> None:
    page = console.client.get("/account/security")
    assert page.url.path == "/login"
    assert page.history[0].headers["location"] == "/login?next=/account/security"
    assert '<html lang="zh-CN">' in page.text and "登录" in page.text
    console.change_password(console.sign_in("admin", console.admin_password))
    signed_in = console.client.post(
        "/login",
        data={
            "username": "admin",
            "password": NEW_PASSWORD,
            "csrf_token": form_token(console.client.get("/login")),
            "next": "/account/security",
        },
    )
    assert signed_in.url.path == "/account/security"


def test_a_one_time_password_must_be_changed_before_anything_else(console: Console) -> None:
    first = console.sign_in("admin", console.admin_password)
    assert first.url.path == "/account/password"
    assert console.client.get("/").url.path == "/account/password"
    old_cookie = session_cookie(console.client)
    mismatch = console.client.post(
        "/account/password",
        data={
            "current": console.admin_password,
            "new": NEW_PASSWORD,
            "repeat": NEW_PASSWORD + "x",
            "csrf_token": form_token(first),
        },
    )
    assert mismatch.status_code == 422 and "两次输入的新密码不一致" in mismatch.text
    done = console.change_password(first)
    assert done.url.path == "/account/password" and "密码已修改" in done.text
    # Changing the password ended every session, this one included.
    console.client.cookies.set("__Host-sbx_session", old_cookie)
    assert console.client.get("/").url.path == "/login"
    home = console.sign_in("admin", NEW_PASSWORD)
    assert home.url.path == "/" and "系统管理员" in home.text
    actions = [e["action"] for e in console.entries()]
    assert actions.count("session.open") == 2
    assert "user.password" in actions and "session.close" in actions


def test_wrong_passwords_get_one_answer_are_recorded_and_lock_the_account(
    console: Console,
) -> None:
    for _ in range(5):
        wrong = console.sign_in("admin", "not-the-password")
        assert wrong.status_code == 401
        assert "用户名、密码或验证码错误" in wrong.text
    unknown = console.sign_in("nobody", "whatever")
    assert unknown.status_code == 401 and unknown.text.count("错误") == wrong.text.count("错误")
    locked = console.sign_in("admin", console.admin_password)
    assert locked.status_code == 401  # the right password, but locked now
    failures = [e for e in console.entries() if e["action"] == "session.login"]
    assert [e["outcome"] for e in failures] == ["failed"] * 7
    assert "locked after 5 failures" in failures[4]["detail"]["reason"]
    assert "__Host-sbx_session" not in console.client.cookies


def test_sign_in_without_the_forms_own_token_is_refused(console: Console) -> None:
    console.client.get("/login")
    forged = console.client.post(
        "/login",
        data={"username": "admin", "password": console.admin_password, "csrf_token": "forged"},
    )
    assert forged.status_code == 403 and "登录表单已过期" in forged.text
    console.client.cookies.clear()
    no_cookie = console.client.post(
        "/login",
        data={"username": "admin", "password": console.admin_password, "csrf_token": "x"},
    )
    assert no_cookie.status_code == 403
    assert not [e for e in console.entries() if e["action"] == "session.open"]


def test_the_session_cookie_is_host_only_http_only_secure_and_lax(console: Console) -> None:
    console.client.get("/login")
    token = console.client.cookies["sbx_login_csrf"]
    response = console.client.post(
        "/login",
        data={"username": "admin", "password": console.admin_password, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = next(
        value
        for name, value in response.headers.multi_items()
        if name == "set-cookie" and value.startswith("__Host-sbx_session=")
    )
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path", "samesite"} <= attributes
    assert "samesite=lax" in cookie.lower() and "domain" not in attributes
    secret = cookie.split(";")[0].split("=", 1)[1]
    # Only the secret's hash is stored, and the ledger never sees it.
    with console.found.sessions() as session:
        stored = session.scalars(select(BrowserSession.secret_hash)).one()
    assert secret not in stored and len(stored) == 64
    assert secret not in "\n".join(line.decode() for _, line in console.found.ledger.entries(0))


def test_state_changes_need_the_sessions_csrf_token(console: Console) -> None:
    home = console.sign_in_admin()
    csrf = form_token(home)
    for data in ({}, {"csrf_token": "wrong"}):
        refused = console.client.post("/logout", data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert console.client.get("/").url.path == "/"  # still signed in
    # The JSON API accepts the session cookie too, but only with the token in a header.
    api = console.client.post("/api/v1/me/tokens", json={"name": "script"})
    assert api.status_code == 403 and "CSRF" in api.json()["detail"]
    api = console.client.post(
        "/api/v1/me/tokens", json={"name": "script"}, headers={"X-CSRF-Token": csrf}
    )
    assert api.status_code == 201, api.text
    assert console.client.get("/api/v1/me").json()["username"] == "admin"
    denials = [e for e in console.entries() if e["action"] == "request.denied"]
    assert len(denials) == 3
    assert all("CSRF" in e["detail"]["reason"] for e in denials)
    out = console.client.post("/logout", data={"csrf_token": csrf})
    assert out.url.path == "/login"
    assert console.client.get("/api/v1/me").status_code == 401


def test_sessions_end_when_idle_when_old_and_when_the_organization_is_suspended(
    console: Console,
) -> None:
    found = console.found
    console.change_password(console.sign_in("admin", console.admin_password))
    now = [datetime.now(UTC) + timedelta(seconds=1)]  # after the password change
    browser = SessionService(
        found.sessions,
        found.identity,
        idle=timedelta(minutes=30),
        lifetime=timedelta(hours=12),
        clock=lambda: now[0],
    )
    opened = browser.sign_in("admin", NEW_PASSWORD)
    for step in range(1, 26):  # used every 29 minutes: alive until its 12 hours are up
        now[0] += timedelta(minutes=29)
        alive = browser.resolve(opened.secret)
        assert (alive is not None) == (step * 29 < 12 * 60), step
    second = browser.sign_in("admin", NEW_PASSWORD)
    now[0] += timedelta(minutes=31)
    assert browser.resolve(second.secret) is None  # idle
    admin = browser.resolve(browser.sign_in("admin", NEW_PASSWORD).secret)
    assert admin is not None and admin.account.username == "admin"
    unit = found.identity.create_organization(
        admin.account.actor(),
        kind=OrganizationType.APPLICATION_UNIT,
        name="海岸线数据科技",
        credit_code="91370200MA0000012" + check_character("91370200MA0000012"),
    )
    user, password = found.identity.create_user(
        admin.account.actor(), organization_id=unit.id, username="wang", display_name="王"
    )
    found.identity.set_password(user.id, password, NEW_PASSWORD)
    third = browser.sign_in("wang", NEW_PASSWORD)
    assert browser.resolve(third.secret) is not None
    found.identity.set_organization_status(
        admin.account.actor(), unit.id, OrganizationStatus.SUSPENDED, "serious violation"
    )
    assert browser.resolve(third.secret) is None
    assert browser.resolve("") is None and browser.resolve("x" * 500) is None


def test_the_console_speaks_chinese_first_and_english_on_request(console: Console) -> None:
    home = console.sign_in_admin()
    assert '<html lang="zh-CN">' in home.text and "欢迎" in home.text
    english = console.client.get("/lang/en?next=/")
    assert english.url.path == "/"
    assert '<html lang="en">' in english.text and "Welcome, admin" in english.text
    assert "Administrator" in english.text and "系统管理员" not in english.text
    back = console.client.get("/lang/zh-CN?next=/account/security")
    assert back.url.path == "/account/security" and "双因素认证" in back.text
    unknown = console.client.get("/lang/xx?next=/")
    assert '<html lang="zh-CN">' in unknown.text


@pytest.mark.parametrize(
    "target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil"]
)
def test_redirects_stay_on_this_site(console: Console, target: str) -> None:
    response = console.client.get("/lang/en", params={"next": target}, follow_redirects=False)
    assert response.headers["location"] == "/"


def test_pages_carry_security_headers(console: Console) -> None:
    page = console.client.get("/login")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert console.client.get("/static/console.css").status_code == 200


def test_the_second_factor_is_set_up_from_the_console(console: Console) -> None:
    console.sign_in_admin()
    page = console.client.get("/account/security")
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret is not None and 'src="data:image/svg+xml;base64,' in page.text
    wrong = console.client.post(
        "/account/security",
        data={"secret": secret.group(1), "code": "000000", "csrf_token": form_token(page)},
    )
    assert wrong.status_code == 422
    forged = console.client.post(
        "/account/security",
        data={"secret": "not base32!", "code": "123456", "csrf_token": form_token(page)},
    )
    assert forged.status_code == 422
    totp = pyotp.TOTP(secret.group(1))
    on = console.client.post(
        "/account/security",
        data={"secret": secret.group(1), "code": totp.now(), "csrf_token": form_token(page)},
    )
    assert on.status_code == 200 and 'data-testid="totp-on"' in on.text
    console.client.post("/logout", data={"csrf_token": form_token(on)})
    assert console.sign_in("admin", NEW_PASSWORD).status_code == 401  # the code is needed
    at = datetime.now(UTC) + timedelta(seconds=30)  # the next step: a code not used yet
    with_code = console.sign_in("admin", NEW_PASSWORD, totp=totp.at(at))
    assert with_code.url.path == "/"


def test_signing_in_again_ends_the_previous_session(console: Console) -> None:
    console.sign_in_admin()
    first = session_cookie(console.client)
    # A sign-in form left open in another tab, posted while the session is alive.
    console.client.cookies.delete("__Host-sbx_session")
    token = form_token(console.client.get("/login"))
    console.client.cookies.set("__Host-sbx_session", first, domain="testserver.local")
    again = console.client.post(
        "/login", data={"username": "admin", "password": NEW_PASSWORD, "csrf_token": token}
    )
    assert again.url.path == "/"
    second = session_cookie(console.client)
    assert first != second
    assert console.found.browser_sessions.resolve(first) is None
    assert console.found.browser_sessions.resolve(second) is not None
    closed = [e for e in console.entries() if e["action"] == "session.close"]
    assert closed[-1]["detail"]["reason"] == "signed in again"
