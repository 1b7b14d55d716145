"""Organization and user administration in the console, on SQLite and PostgreSQL."""

from __future__ import annotations

import re

from gateway.db.models import UserStatus
from sandbox.identifiers.credit_code import check_character
from tests.webconsole import NEW_PASSWORD, Console, form_token

UNIT_CODE = "91370200MA0000012" + check_character("91370200MA0000012")


def register_unit(console: Console, csrf: str) -> str:
    created = console.client.post(
        "/organizations",
        data={
            "type": "application_unit",
            "name": "海岸线数据科技有限公司",
            "credit_code": UNIT_CODE,
            "csrf_token": csrf,
        },
    )
    assert created.status_code == 200 and "单位已登记" in created.text
    return created.url.path.rsplit("/", 1)[1]


def add_user(console: Console, csrf: str, organization: str, username: str) -> str:
    added = console.client.post(
        f"/organizations/{organization}/users",
        data={
            "username": username,
            "display_name": "王工",
            "roles": ["applicant"],
            "csrf_token": csrf,
        },
    )
    assert added.status_code == 201, added.text
    shown = re.search(r'class="secret">([^<]+)<', added.text)
    assert shown is not None
    return shown.group(1)


def test_an_admin_registers_an_organization_and_its_first_user(console: Console) -> None:
    csrf = form_token(console.sign_in_admin())
    listing = console.client.get("/organizations")
    assert listing.status_code == 200 and "登记单位" in listing.text
    organization = register_unit(console, csrf)
    password = add_user(console, csrf, organization, "wang")
    page = console.client.get(f"/organizations/{organization}")
    assert 'data-user="wang"' in page.text and password not in page.text  # shown once only
    verified = console.client.post(
        f"/organizations/{organization}/verification",
        data={"value": "verified", "reason": "营业执照核验", "csrf_token": csrf},
    )
    assert "实名核验结果已登记" in verified.text
    assert 'data-testid="verification">已核验<' in verified.text
    found = console.client.get("/organizations", params={"q": "海岸线", "type": "application_unit"})
    assert "海岸线数据科技有限公司" in found.text
    none = console.client.get("/organizations", params={"q": "不存在的单位"})
    assert "没有符合条件的单位" in none.text
    recorded = {e["action"]: e for e in console.entries()}
    assert recorded["user.create"]["detail"]["roles"] == ["applicant"]
    assert recorded["user.create"]["detail"]["request"]["path"].endswith("/users")
    assert password not in "\n".join(str(e) for e in console.entries())


def test_bad_input_gets_a_page_with_the_reason_and_keeps_the_form(console: Console) -> None:
    csrf = form_token(console.sign_in_admin())
    bad = console.client.post(
        "/organizations",
        data={
            "type": "provider",
            "name": "水务",
            "credit_code": UNIT_CODE[:-1] + "0",
            "csrf_token": csrf,
        },
    )
    assert bad.status_code == 422 and "credit code" in bad.text and 'value="水务"' in bad.text
    register_unit(console, csrf)
    again = console.client.post(
        "/organizations",
        data={"type": "provider", "name": "水务", "credit_code": UNIT_CODE, "csrf_token": csrf},
    )
    assert again.status_code == 409
    kind = console.client.get("/organizations", params={"type": "bogus"})
    assert kind.status_code == 422 and "<h1>请求无效</h1>" in kind.text
    missing = console.client.get("/organizations/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404 and "<h1>未找到</h1>" in missing.text


def test_members_see_their_own_organization_only_and_cannot_administer(
    console: Console,
) -> None:
    csrf = form_token(console.sign_in_admin())
    operator = console.found.identity.authenticate("admin", NEW_PASSWORD).organization_id
    organization = register_unit(console, csrf)
    password = add_user(console, csrf, organization, "wang")
    console.client.post("/logout", data={"csrf_token": csrf})
    first = console.sign_in("wang", password)
    console.change_password(first, current=password)
    home = console.sign_in("wang", NEW_PASSWORD)
    assert "数据申请人" in home.text
    listing = console.client.get("/organizations")
    assert "海岸线数据科技有限公司" in listing.text and ">运营</a>" not in listing.text
    assert "登记单位" not in listing.text  # no form for what the roles do not allow
    # Another organization's page by its id reads exactly like one that does not exist.
    other = console.client.get(f"/organizations/{operator}")
    absent = console.client.get("/organizations/0123456789abcdef0123456789abcdef")
    assert other.status_code == absent.status_code == 404
    forged = console.client.post(
        "/organizations",
        data={
            "type": "provider",
            "name": "x",
            "credit_code": UNIT_CODE,
            "csrf_token": form_token(home),
        },
    )
    assert forged.status_code == 403 and "拒绝记录已存档" in forged.text
    denied = [e for e in console.entries() if e["outcome"] == "denied"]
    assert [e["action"] for e in denied] == [
        "organization.read",
        "organization.read",
        "request.denied",
    ]
    assert denied[0]["detail"]["reason"] == "another organization"
    assert denied[2]["detail"]["action"] == "organization:create"


def test_admins_cannot_administer_themselves_and_disabling_ends_sessions(
    console: Console,
) -> None:
    csrf = form_token(console.sign_in_admin())
    admin = console.found.identity.authenticate("admin", NEW_PASSWORD)
    own = console.client.get(f"/organizations/{admin.organization_id}")
    assert f"/users/{admin.id}/status" not in own.text  # no button against oneself
    self_disable = console.client.post(
        f"/users/{admin.id}/status",
        data={"value": "disabled", "reason": "x", "csrf_token": csrf},
    )
    assert self_disable.status_code == 403
    organization = register_unit(console, csrf)
    password = add_user(console, csrf, organization, "wang")
    other = console.found.browser_sessions.sign_in("wang", password)
    assert console.found.browser_sessions.resolve(other.secret) is not None
    disabled = console.client.post(
        f"/users/{other.account.id}/status",
        data={"value": "disabled", "reason": "离职", "csrf_token": csrf},
    )
    assert "账户状态已变更" in disabled.text
    assert console.found.browser_sessions.resolve(other.secret) is None
    snapshot = console.found.identity.get_user(admin.actor(), other.account.id)
    assert snapshot.status is UserStatus.DISABLED
    reset = console.client.post(
        f"/users/{other.account.id}/password", data={"reason": "忘记密码", "csrf_token": csrf}
    )
    assert reset.status_code == 200 and 'data-testid="one-time-password"' in reset.text


def test_a_ledger_outage_fails_closed_with_a_page_and_changes_nothing(console: Console) -> None:
    csrf = form_token(console.sign_in_admin())
    admin = console.found.identity.authenticate("admin", NEW_PASSWORD).actor()
    console.found.ledger.close()  # appends are refused from now on
    failed = console.client.post(
        "/organizations",
        data={"type": "provider", "name": "水务", "credit_code": UNIT_CODE, "csrf_token": csrf},
    )
    assert failed.status_code == 503
    assert "<h1>审计账本不可用</h1>" in failed.text and "nothing was changed" in failed.text
    assert console.found.identity.list_organizations(admin).total == 1  # the operator only
    api = console.client.post(
        "/api/v1/organizations",
        json={"type": "provider", "name": "水务", "credit_code": UNIT_CODE},
        headers={"X-CSRF-Token": csrf},
    )
    assert api.status_code == 503 and "nothing was changed" in api.json()["detail"]
