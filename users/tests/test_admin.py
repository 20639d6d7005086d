"""The admin: users with their verification state, search, filters, the resend action."""

import pytest

from tasks import send_verify_email
from users.models import OutboundEmail
from users.services import delivery
from users.tests.factories import UserFactory, create_notice, create_verification, email_of, superuser_with_factor

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    admin = superuser_with_factor(username="root")
    client.force_login(admin)
    return client


def test_user_list_shows_verification_state_and_filters(staff_client):
    sent = create_verification(UserFactory(username="sentuser"))
    delivery.deliver(verification_id=sent.pk)
    create_verification(UserFactory(username="pendinguser"))
    page = staff_client.get("/admin/users/user/").content.decode()
    assert "sentuser" in page and "pendinguser" in page
    assert "verification email" in page.lower()
    sent_only = staff_client.get("/admin/users/user/?verification_state=sent").content.decode()
    assert "sentuser" in sent_only and "pendinguser" not in sent_only
    found = staff_client.get("/admin/users/user/?q=pendinguser").content.decode()
    assert "pendinguser" in found and "sentuser" not in found


def test_user_page_shows_history_without_the_secret(staff_client):
    verification = create_verification()
    page = staff_client.get(f"/admin/users/user/{verification.user_id}/change/").content.decode()
    assert verification.email in page and "pending" in page
    assert verification.nonce not in page
    for url in (
        f"/admin/users/emailverification/{verification.pk}/change/",
        f"/admin/users/outboundemail/{email_of(verification).pk}/change/",
    ):
        detail = staff_client.get(url).content.decode()
        assert verification.nonce not in detail and "secret_code" not in detail


def test_resend_action_replaces_the_link(staff_client, django_capture_on_commit_callbacks):
    first = create_verification()
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            "/admin/users/user/", {"action": "resend_verification", "_selected_action": [first.user_id]}
        )
    assert response.status_code == 302
    assert len(callbacks) == 1
    first.refresh_from_db()
    assert first.state == "superseded" and email_of(first).state == "superseded"
    assert OutboundEmail.objects.filter(user_id=first.user_id, state="pending").count() == 1


def test_admin_requires_staff(client):
    user = UserFactory()
    client.force_login(user)
    assert client.get("/admin/users/user/").status_code == 302


def test_failed_verifications_are_listed_with_their_error_and_can_be_retried(
    staff_client, django_capture_on_commit_callbacks
):
    verification = create_verification()
    failed = email_of(verification)
    OutboundEmail.objects.filter(pk=failed.pk).update(state="failed", last_error="550 5.1.1 User unknown")
    page = staff_client.get("/admin/users/outboundemail/?state__exact=failed").content.decode()
    assert failed.recipient in page and "550 5.1.1 User unknown" in page
    assert f'href="/admin/users/user/{failed.user_id}/change/"' in page
    assert (
        "550 5.1.1 User unknown" in staff_client.get(f"/admin/users/outboundemail/{failed.pk}/change/").content.decode()
    )
    with django_capture_on_commit_callbacks() as callbacks:
        # From the list filtered by "failed", as the runbook says: the rows leave that filter as
        # they are retried, and the page said "-1 skipped".
        done = staff_client.post(
            "/admin/users/outboundemail/?state__exact=failed",
            {"action": "retry_failed", "_selected_action": [failed.pk]},
            follow=True,
        )
    assert "Queued 1 failed email(s) again; 0 skipped" in done.content.decode()
    assert len(callbacks) == 1
    row = OutboundEmail.objects.get(pk=failed.pk)
    assert row.state == "pending" and row.verification.nonce == verification.nonce  # same link


def test_queue_overview_shows_depths_dead_letters_and_states(staff_client, redis_broker):
    create_verification()  # pending (this test never commits, so nothing is queued for it)
    send_verify_email.send(1)  # one message waiting in Redis
    index = staff_client.get("/admin/").content.decode()
    assert "/admin/queues/" in index
    page = staff_client.get("/admin/queues/").content.decode()
    assert "<td>critical</td><td>1</td>" in page
    assert "pending" in page and "Oldest email not sent yet" in page


def test_queue_overview_says_so_when_nothing_waits(staff_client, redis_broker):
    notice = create_notice()
    OutboundEmail.objects.filter(pk=notice.pk).update(state="sent")
    page = staff_client.get("/admin/queues/").content.decode()
    assert "Every email has gone out" in page and "0 s old" not in page


def test_queue_overview_is_for_staff_only(client):
    assert client.get("/admin/queues/").status_code == 302


def test_task_list_is_hidden_while_the_task_table_is_off(staff_client, settings):
    assert settings.DRAMATIQ_TASK_ADMIN is False  # the default: see docs/performance-summary.md
    assert staff_client.get("/admin/django_dramatiq/task/").status_code == 404
    assert staff_client.get("/admin/queues/").status_code == 200  # the overview operators use


@pytest.mark.django_db(transaction=True)
def test_opting_into_the_task_table_records_each_message_with_its_id_only(stub_broker):
    from django_dramatiq.middleware import AdminMiddleware
    from django_dramatiq.models import Task

    stub_broker.add_middleware(AdminMiddleware())  # what DRAMATIQ_TASK_ADMIN=true adds
    verification = create_verification(UserFactory())  # queues its email once committed
    [task] = Task.tasks.filter(actor_name="send_verify_email")
    assert task.status == Task.STATUS_ENQUEUED
    assert task.message.args == (verification.pk,) and task.message.kwargs == {}


def test_emails_and_links_are_read_only_records(staff_client):
    """Their pages show them and the actions act on them; no form writes one back (saving would
    write the state the page was loaded with over whatever the worker recorded since)."""
    verification = create_verification()
    email = email_of(verification)
    for url in (
        f"/admin/users/outboundemail/{email.pk}/change/",
        f"/admin/users/emailverification/{verification.pk}/change/",
    ):
        page = staff_client.get(url)
        assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
        assert staff_client.post(url, {"state": "sent"}).status_code == 403
    assert OutboundEmail.objects.get(pk=email.pk).state == "pending"
    listing = staff_client.get("/admin/users/outboundemail/").content.decode()
    assert 'value="retry_failed"' in listing


@pytest.mark.parametrize(
    "url",
    [
        "/admin/users/outboundemail/?kind=%00",
        "/admin/users/loginsession/?kind=%00",
        "/admin/users/securityevent/?kind=%00",
        "/admin/users/loginsession/?client_ip=x",
        "/admin/users/securityevent/?client_ip=x",
    ],
)
def test_a_malformed_filter_is_a_400_never_a_500(staff_client, url):
    assert staff_client.get(url).status_code in (200, 302, 400)


@pytest.mark.parametrize(
    ("changelist", "action", "selected"),
    [
        ("/admin/users/user/", "resend_verification", "abc"),
        ("/admin/users/user/", "reset_second_factors", "\x00"),
        ("/admin/users/loginsession/", "block", "not-a-uuid"),
        ("/admin/users/outboundemail/", "retry_failed", "abc"),
    ],
)
def test_a_malformed_selection_is_a_400_never_a_500(staff_client, changelist, action, selected):
    answer = staff_client.post(changelist, {"action": action, "_selected_action": [selected], "index": "0"})
    assert answer.status_code in (302, 400)


@pytest.fixture
def clerk_client(client):
    """A member of staff, not a superuser, holding every permission of the users app and of groups."""
    from django.contrib.auth.models import Group, Permission

    from users.tests.factories import with_totp

    clerk = UserFactory(username="clerk", is_staff=True, is_email_verified=True)
    with_totp(clerk)
    perms = Permission.objects.filter(content_type__app_label__in=["users", "auth"])
    clerk.user_permissions.set(perms)
    Group.objects.create(name="ops").user_set.add(clerk)
    client.force_login(clerk)
    return client


def test_nobody_deletes_an_email_still_owed_and_staff_delete_none(clerk_client, client):
    """A clerk deleted a notice of a factor reset before it went out, and a superuser's emails (a
    review): the promise holds for notices too. Superusers may delete what is settled."""
    notice = create_notice(UserFactory(), kind=OutboundEmail.Kind.SECURITY_NOTICE)
    root = UserFactory(username="boss")
    settled = create_notice(root)
    OutboundEmail.objects.filter(pk=settled.pk).update(state="sent")
    for email in (notice, settled):
        assert clerk_client.get(f"/admin/users/outboundemail/{email.pk}/delete/").status_code == 403
        forged = {"action": "delete_selected", "_selected_action": [email.pk], "post": "yes", "index": "0"}
        clerk_client.post("/admin/users/outboundemail/", forged)
    verification = create_verification(root)
    assert clerk_client.get(f"/admin/users/emailverification/{verification.pk}/delete/").status_code == 403
    assert OutboundEmail.objects.filter(pk__in=[notice.pk, settled.pk]).count() == 2
    client.force_login(superuser_with_factor(username="root"))
    assert client.get(f"/admin/users/outboundemail/{notice.pk}/delete/").status_code == 403
    assert client.post(f"/admin/users/outboundemail/{settled.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not OutboundEmail.objects.filter(pk=settled.pk).exists()
    assert OutboundEmail.objects.filter(pk=notice.pk).exists()


def test_only_superusers_change_groups(clerk_client):
    """A group's permissions are permissions: a clerk with auth.change_group gave their own group
    every permission (a review)."""
    from django.contrib.auth.models import Group, Permission

    group = Group.objects.get(name="ops")
    every = [str(p.pk) for p in Permission.objects.all()]
    assert 'name="_save"' not in clerk_client.get(f"/admin/auth/group/{group.pk}/change/").content.decode()
    assert (
        clerk_client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "ops", "permissions": every}).status_code
        == 403
    )
    assert clerk_client.post("/admin/auth/group/add/", {"name": "all", "permissions": every}).status_code == 403
    assert group.permissions.count() == 0 and not Group.objects.filter(name="all").exists()


def test_a_session_row_is_never_saved_back_but_staff_still_block_one(clerk_client):
    from users.models import LoginSession
    from users.services import sessions

    customer = UserFactory(is_email_verified=True)
    sessions.session_start(user=customer, user_agent="test", client_ip="127.0.0.1")
    session = LoginSession.objects.get(user=customer)
    url = f"/admin/users/loginsession/{session.pk}/change/"
    assert clerk_client.get(url).status_code == 200 and 'name="_save"' not in clerk_client.get(url).content.decode()
    assert clerk_client.post(url, {}).status_code == 403
    blocked = clerk_client.post(
        "/admin/users/loginsession/", {"action": "block", "_selected_action": [str(session.pk)], "index": "0"}
    )
    assert blocked.status_code == 302 and LoginSession.objects.get(pk=session.pk).blocked_at is not None


def test_staff_do_not_set_their_own_role(clerk_client):
    from users.models import User

    clerk = User.objects.get(username="clerk")
    page = clerk_client.get(f"/admin/users/user/{clerk.pk}/change/").content.decode()
    assert 'name="role"' not in page


@pytest.mark.parametrize(
    ("changelist", "action"),
    [
        ("/admin/users/loginsession/?client_ip=notanip", "block"),
        ("/admin/users/outboundemail/?state=%00", "retry_failed"),
        ("/admin/users/suppression/?reason__exact=%00", "lift"),
    ],
)
def test_an_action_on_a_malformed_filter_is_refused_never_a_500(staff_client, changelist, action):
    """A review: Django builds the list from the filters before the action runs, and the query failed
    there (500). Now Django's "invalid lookup": the list again with ?e=1, nothing done."""
    from users.models import LoginSession, Suppression
    from users.services import sessions

    customer = UserFactory(is_email_verified=True)
    sessions.session_start(user=customer, user_agent="test", client_ip="127.0.0.1")
    selected = {
        "block": str(LoginSession.objects.get(user=customer).pk),
        "retry_failed": str(create_notice(customer).pk),
        "lift": str(Suppression.objects.create(address="gone@example.com", reason="bounced").pk),
    }[action]
    answer = staff_client.post(changelist, {"action": action, "_selected_action": [selected], "index": "0"})
    assert answer.status_code == 302 and answer["Location"].endswith("?e=1")
    assert LoginSession.objects.get(user=customer).blocked_at is None


def test_every_admin_of_a_model_with_a_secret_column_refuses_it_as_a_filter():
    """A changelist answers any lookup on its model's own columns (``?nonce__startswith=`` guessed a
    link's nonce): an admin added later is held to the rule too."""
    from django.contrib import admin

    from users.admin.base import SECRET_COLUMNS

    guarded = []
    for model, model_admin in admin.site._registry.items():
        secret = SECRET_COLUMNS & {f.name for f in model._meta.get_fields()}
        for column in secret:
            assert not model_admin.lookup_allowed(f"{column}__startswith", "a", None), (model, column)
        guarded += [(model._meta.model_name, column) for column in secret]
    assert ("emailverification", "nonce") in guarded and ("loginsession", "refresh_jti") in guarded
