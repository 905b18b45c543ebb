"""Secrets: encrypted at rest, rotated keys, audit events, the API, the admin and the command.

The one rule every test here checks from a different side: a value goes in and never comes out,
except to a step's template through SecretsView.
"""

from __future__ import annotations

import io
import os
import stat
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from flows.language.templates import TemplateError, render_string
from orchestrator.env import secrets_keys
from runs.models import Event
from steps.models import Secret
from steps.secrets import (
    SecretError,
    SecretsView,
    decrypt,
    delete_secret,
    get_values,
    rotate_keys,
    set_secret,
    update_secret,
)

pytestmark = pytest.mark.django_db

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
VALUE = "hunter2-correct-horse"
LIST = "/api/v1/secrets"


def raw_rows() -> str:
    """Every column of every stored secret, as the database holds them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM steps_secret")
        return repr(cursor.fetchall())


def secret_events() -> list[tuple[str, str, dict]]:
    return list(
        Event.objects.filter(type__startswith="secret.").values_list("type", "actor", "data")
    )


# Storage and keys


def test_a_secret_is_stored_encrypted_and_reads_back():
    set_secret("API_TOKEN", VALUE, description="for the deploy step")

    assert VALUE not in raw_rows()
    secret = Secret.objects.get()
    assert secret.description == "for the deploy step"
    assert decrypt(secret) == VALUE
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}


def test_setting_a_secret_again_replaces_its_value_and_keeps_its_description(alice):
    first = set_secret("API_TOKEN", VALUE, description="kept")

    second = set_secret("API_TOKEN", "another-value", user=alice)

    assert second.pk == first.pk
    secret = Secret.objects.get()
    assert (secret.description, secret.updated_by) == ("kept", alice)
    assert secret.updated_at > first.created_at
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": "another-value"}


def test_get_values_reads_many_secrets_in_one_query(django_assert_num_queries):
    for name in ["A", "B", "C"]:
        set_secret(name, f"value-of-{name}")

    with django_assert_num_queries(1):
        values = get_values(["A", "C", "MISSING"])

    assert values == {"A": "value-of-A", "C": "value-of-C"}


def test_a_value_encrypted_with_an_old_key_decrypts_when_that_key_comes_second():
    with override_settings(FURROW_SECRETS_KEYS=[OLD_KEY]):
        set_secret("API_TOKEN", VALUE)

    with override_settings(FURROW_SECRETS_KEYS=[NEW_KEY, OLD_KEY]):
        assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}
        update_secret("API_TOKEN", value="rotated-value")

    # The update encrypted with the first key alone: the old key is no longer needed.
    with override_settings(FURROW_SECRETS_KEYS=[NEW_KEY]):
        assert get_values(["API_TOKEN"]) == {"API_TOKEN": "rotated-value"}


def test_rotate_keys_re_encrypts_every_secret_with_the_first_key():
    with override_settings(FURROW_SECRETS_KEYS=[OLD_KEY]):
        set_secret("A", "value-a")
        set_secret("B", "value-b")
    before = Secret.objects.get(name="A").updated_at

    with override_settings(FURROW_SECRETS_KEYS=[NEW_KEY, OLD_KEY]):
        assert rotate_keys() == 2

    with override_settings(FURROW_SECRETS_KEYS=[NEW_KEY]):
        assert get_values(["A", "B"]) == {"A": "value-a", "B": "value-b"}
    assert Secret.objects.get(name="A").updated_at == before  # the value did not change


def test_a_secret_that_no_configured_key_decrypts_raises_a_clear_error():
    with override_settings(FURROW_SECRETS_KEYS=[OLD_KEY]):
        set_secret("API_TOKEN", VALUE)
    ciphertext = Secret.objects.get().ciphertext

    with override_settings(FURROW_SECRETS_KEYS=[NEW_KEY]):
        with pytest.raises(SecretError) as error:
            get_values(["API_TOKEN"])
        with pytest.raises(SecretError):
            rotate_keys()

    assert str(error.value) == (
        "secret 'API_TOKEN' cannot be decrypted with the configured FURROW_SECRETS_KEY"
    )
    assert Secret.objects.get().ciphertext == ciphertext  # the failed rotation changed nothing


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("1ABC", VALUE, "a secret name starts with a letter"),
        ("has-dash", VALUE, "a secret name starts with a letter"),
        ("A" * 101, VALUE, "a secret name starts with a letter"),
        ("TOKEN", "", "cannot be empty"),
        ("TOKEN", "   \n", "cannot be empty"),
        ("TOKEN", 42, "must be a string"),
        ("TOKEN", "x" * (64 * 1024 + 1), "at most 65536 bytes"),
        ("TOKEN", "é" * (32 * 1024 + 1), "at most 65536 bytes"),
    ],
)
def test_a_bad_name_or_value_is_refused_and_nothing_is_stored(name, value, message):
    with pytest.raises(ValidationError, match=message):
        set_secret(name, value)

    assert not Secret.objects.exists()
    assert secret_events() == []


def test_the_longest_allowed_value_and_name_are_accepted():
    set_secret("_" + "A" * 99, "x" * 64 * 1024)

    assert len(get_values(["_" + "A" * 99])["_" + "A" * 99]) == 64 * 1024


def test_every_change_is_audited_by_name_and_never_by_value(alice):
    set_secret("API_TOKEN", VALUE)
    update_secret("API_TOKEN", description="now described", user=alice)
    delete_secret("API_TOKEN", user=alice)

    assert secret_events() == [
        ("secret.created", "cli", {"name": "API_TOKEN"}),
        ("secret.updated", "user:alice", {"name": "API_TOKEN"}),
        ("secret.deleted", "user:alice", {"name": "API_TOKEN"}),
    ]
    assert not Secret.objects.exists()


def test_changing_or_deleting_an_unknown_secret_raises_does_not_exist():
    with pytest.raises(Secret.DoesNotExist):
        update_secret("NOPE", value=VALUE)
    with pytest.raises(Secret.DoesNotExist):
        delete_secret("NOPE")

    assert secret_events() == []


# Keys from the environment


def test_without_the_variable_a_key_is_generated_once_and_kept_private(tmp_path, monkeypatch):
    monkeypatch.delenv("FURROW_SECRETS_KEY", raising=False)

    first = secrets_keys(tmp_path / "var")
    again = secrets_keys(tmp_path / "var")

    assert first == again
    assert len(first) == 1
    Fernet(first[0])
    mode = stat.S_IMODE(os.stat(tmp_path / "var" / "secrets.key").st_mode)
    assert mode == 0o600


def test_the_variable_holds_a_comma_separated_list_of_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("FURROW_SECRETS_KEY", f" {NEW_KEY} , {OLD_KEY}")

    assert secrets_keys(tmp_path) == [NEW_KEY, OLD_KEY]
    assert not (tmp_path / "secrets.key").exists()


@pytest.mark.parametrize("raw", ["not-a-key", f"{NEW_KEY},", f"{NEW_KEY},{NEW_KEY[:-2]}"])
def test_a_key_that_is_not_a_fernet_key_is_refused_at_startup(tmp_path, monkeypatch, raw):
    monkeypatch.setenv("FURROW_SECRETS_KEY", raw)

    with pytest.raises(ImproperlyConfigured, match="is not a valid Fernet key") as error:
        secrets_keys(tmp_path)

    assert "FURROW_SECRETS_KEY: key #" in str(error.value)
    assert NEW_KEY[:-2] not in str(error.value)  # the message never repeats a key


# SecretsView: what templates see


def test_the_view_decrypts_a_secret_on_first_read_only(django_assert_num_queries):
    set_secret("API_TOKEN", VALUE)
    set_secret("OTHER", "never-read")

    with django_assert_num_queries(0):
        view = SecretsView()
    with django_assert_num_queries(1):
        assert view["API_TOKEN"] == VALUE
        assert view["API_TOKEN"] == VALUE

    assert view.used == {"API_TOKEN": VALUE}
    assert sorted(view) == ["API_TOKEN", "OTHER"]
    assert len(view) == 2
    assert "OTHER" in view
    assert view.used == {"API_TOKEN": VALUE}  # `in` did not decrypt
    assert VALUE not in repr(view)


def test_the_view_refuses_an_unknown_secret_by_name():
    view = SecretsView()

    with pytest.raises(KeyError, match="unknown secret 'NOPE'"):
        view["NOPE"]

    assert view.missing == ["NOPE"]
    assert view.get("NOPE") is None
    assert view.used == {}


def test_templates_read_secrets_through_the_view():
    set_secret("API_TOKEN", VALUE)
    view = SecretsView()

    assert render_string("Bearer {{ secrets.API_TOKEN }}", {"secrets": view}) == f"Bearer {VALUE}"
    assert render_string("{{ secrets['API_TOKEN'] }}", {"secrets": view}) == VALUE
    with pytest.raises(TemplateError):
        render_string("{{ secrets.NOPE }}", {"secrets": view}, path=("with", "token"))

    assert view.missing == ["NOPE"]  # what the caller reports as "unknown secret 'NOPE'"


def test_a_template_reading_an_undecryptable_secret_fails_with_the_secret_error():
    with override_settings(FURROW_SECRETS_KEYS=[OLD_KEY]):
        set_secret("API_TOKEN", VALUE)

    with (
        override_settings(FURROW_SECRETS_KEYS=[NEW_KEY]),
        pytest.raises(SecretError, match="'API_TOKEN' cannot be decrypted"),
    ):
        render_string("{{ secrets.API_TOKEN }}", {"secrets": SecretsView()})


# API


@pytest.fixture
def stored() -> Secret:
    return set_secret("API_TOKEN", VALUE, description="for deploys")


@pytest.fixture
def member(bob: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(bob)
    return client


def test_post_creates_a_secret_and_answers_without_its_value(api):
    response = api.post(
        LIST, {"name": "API_TOKEN", "value": VALUE, "description": "d"}, format="json"
    )

    assert response.status_code == 201
    assert VALUE not in response.content.decode()
    body = response.json()
    assert (body["name"], body["description"], body["updated_by"]) == ("API_TOKEN", "d", "alice")
    assert set(body) == {"name", "description", "created_at", "updated_at", "updated_by"}
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}
    assert secret_events() == [("secret.created", "user:alice", {"name": "API_TOKEN"})]


def test_post_of_an_existing_name_is_a_conflict_and_changes_nothing(api, stored):
    response = api.post(LIST, {"name": "API_TOKEN", "value": "other-value"}, format="json")

    assert response.status_code == 409
    assert "already exists" in response.json()["message"]
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}


def test_list_and_detail_show_everything_but_the_value(api, stored):
    listed = api.get(LIST)
    detail = api.get(f"{LIST}/API_TOKEN")

    assert listed.status_code == detail.status_code == 200
    for response in (listed, detail):
        content = response.content.decode()
        assert VALUE not in content
        assert stored.ciphertext not in content
        assert "value" not in content
    assert [s["name"] for s in listed.json()["results"]] == ["API_TOKEN"]
    assert detail.json()["description"] == "for deploys"


@pytest.mark.parametrize("method", ["put", "patch"])
def test_put_and_patch_change_the_value_and_answer_without_it(api, stored, method):
    response = getattr(api, method)(f"{LIST}/API_TOKEN", {"value": "new-value"}, format="json")

    assert response.status_code == 200
    assert "new-value" not in response.content.decode()
    assert VALUE not in response.content.decode()
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": "new-value"}
    assert Secret.objects.get().description == "for deploys"


def test_put_can_change_the_description_alone(api, stored):
    response = api.put(f"{LIST}/API_TOKEN", {"description": "rotated monthly"}, format="json")

    assert response.status_code == 200
    assert response.json()["description"] == "rotated monthly"
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}


def test_delete_removes_the_secret(api, stored):
    response = api.delete(f"{LIST}/API_TOKEN")

    assert response.status_code == 204
    assert not Secret.objects.exists()
    assert secret_events()[-1] == ("secret.deleted", "user:alice", {"name": "API_TOKEN"})


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_an_unknown_secret_is_404(api, method):
    response = getattr(api, method)(f"{LIST}/NOPE", {"value": VALUE}, format="json")

    assert response.status_code == 404
    assert response.json() == {"message": "unknown secret 'NOPE'"}


REQUESTS = [
    ("get", LIST),
    ("post", LIST),
    ("get", f"{LIST}/API_TOKEN"),
    ("put", f"{LIST}/API_TOKEN"),
    ("patch", f"{LIST}/API_TOKEN"),
    ("delete", f"{LIST}/API_TOKEN"),
]


@pytest.mark.parametrize(("method", "url"), REQUESTS)
def test_a_user_who_is_not_staff_is_refused(member, stored, method, url):
    body = {"name": "OTHER", "value": "x-value"}
    response = getattr(member, method)(url, body, format="json")

    assert response.status_code == 403
    assert VALUE not in response.content.decode()
    assert get_values(["API_TOKEN", "OTHER"]) == {"API_TOKEN": VALUE}


@pytest.mark.parametrize(("method", "url"), REQUESTS)
def test_an_anonymous_client_is_refused(stored, method, url):
    response = getattr(APIClient(), method)(url, {"value": "x-value"}, format="json")

    assert response.status_code == 401
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"name": "API_TOKEN"}, "value"),
        ({"name": "API_TOKEN", "value": ""}, "value"),
        ({"name": "API_TOKEN", "value": "  "}, "value"),
        ({"name": "API_TOKEN", "value": 1234}, "value"),
        ({"name": "API_TOKEN", "value": None}, "value"),
        ({"name": "API_TOKEN", "value": "x" * (64 * 1024 + 1)}, "value"),
        ({"name": "bad-name", "value": VALUE}, "name"),
        ({"name": "", "value": VALUE}, "name"),
        ({"value": VALUE}, "name"),
        ({"name": "API_TOKEN", "value": VALUE, "ciphertext": "x"}, "ciphertext"),
        (["not", "an", "object"], ""),
    ],
)
def test_a_bad_create_body_is_400_naming_the_field(api, body, path):
    response = api.post(LIST, body, format="json")

    assert response.status_code == 400, response.content
    error = response.json()
    assert error["message"] == "invalid request"
    assert path in [e["path"] for e in error["errors"]]
    assert not Secret.objects.exists()


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, ""),
        ({"value": ""}, "value"),
        ({"value": "x" * (64 * 1024 + 1)}, "value"),
        ({"name": "RENAMED", "value": "new-value"}, "name"),
    ],
)
def test_a_bad_update_body_is_400_and_keeps_the_value(api, stored, body, path):
    response = api.put(f"{LIST}/API_TOKEN", body, format="json")

    assert response.status_code == 400
    assert path in [e["path"] for e in response.json()["errors"]]
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}


# Admin


def test_the_admin_adds_a_secret_through_the_service(client, alice):
    client.force_login(alice)

    response = client.post(
        reverse("admin:steps_secret_add"),
        {"name": "API_TOKEN", "description": "from the admin", "value": VALUE},
    )

    assert response.status_code == 302, response.content.decode()
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}
    assert VALUE not in raw_rows()
    # Django's error reports would hide it too.
    assert response.wsgi_request.sensitive_post_parameters == ("value",)
    assert secret_events() == [("secret.created", "user:alice", {"name": "API_TOKEN"})]


def test_the_admin_add_form_requires_a_value_and_never_renders_one_back(client, alice):
    client.force_login(alice)
    url = reverse("admin:steps_secret_add")

    missing = client.post(url, {"name": "API_TOKEN", "value": ""})
    bad_name = client.post(url, {"name": "bad-name", "value": VALUE})

    assert missing.status_code == bad_name.status_code == 200
    assert "A new secret needs a value." in missing.content.decode()
    assert VALUE not in bad_name.content.decode()
    assert not Secret.objects.exists()


def test_the_admin_change_page_shows_no_value_and_a_blank_value_keeps_it(client, alice, stored):
    client.force_login(alice)
    url = reverse("admin:steps_secret_change", args=[stored.pk])

    page = client.get(url).content.decode()
    response = client.post(url, {"description": "changed", "value": ""})

    assert VALUE not in page
    assert stored.ciphertext not in page
    assert 'type="password"' in page
    assert response.status_code == 302
    assert Secret.objects.get().description == "changed"
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}


def test_the_admin_change_form_replaces_the_value(client, alice, stored):
    client.force_login(alice)

    response = client.post(
        reverse("admin:steps_secret_change", args=[stored.pk]),
        {"description": "for deploys", "value": "new-value"},
    )

    assert response.status_code == 302
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": "new-value"}
    assert Secret.objects.get().updated_by == alice


def test_the_admin_list_and_delete_go_through_the_service(client, alice, stored):
    client.force_login(alice)

    listing = client.get(reverse("admin:steps_secret_changelist") + "?q=API")
    deleted = client.post(reverse("admin:steps_secret_delete", args=[stored.pk]), {"post": "yes"})

    assert "API_TOKEN" in listing.content.decode()
    assert VALUE not in listing.content.decode()
    assert deleted.status_code == 302
    assert not Secret.objects.exists()
    assert secret_events()[-1] == ("secret.deleted", "user:alice", {"name": "API_TOKEN"})


# The set_secret command


def set_secret_command(*args: str, stdin: str = "") -> str:
    out = io.StringIO()
    call_command("set_secret", *args, stdin=io.StringIO(stdin), stdout=out)
    return out.getvalue()


def test_the_command_reads_the_value_from_stdin_without_its_trailing_newline():
    created = set_secret_command("API_TOKEN", "--description", "d", stdin=f"{VALUE}\n")
    updated = set_secret_command("API_TOKEN", stdin="second\n\n")

    assert created == "secret 'API_TOKEN' created\n"
    assert updated == "secret 'API_TOKEN' updated\n"
    assert get_values(["API_TOKEN"]) == {"API_TOKEN": "second\n"}  # only one newline dropped
    assert Secret.objects.get().description == "d"
    assert [event[:2] for event in secret_events()] == [
        ("secret.created", "cli"),
        ("secret.updated", "cli"),
    ]


def test_the_command_reads_the_value_from_a_named_variable(monkeypatch):
    monkeypatch.setenv("DEPLOY_TOKEN", VALUE)

    set_secret_command("API_TOKEN", "--from-env", "DEPLOY_TOKEN")

    assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}


def test_the_command_lists_names_only_and_deletes(stored):
    set_secret("OTHER", "other-value")

    listed = set_secret_command("--list")
    deleted = set_secret_command("API_TOKEN", "--delete")

    assert listed == "API_TOKEN\nOTHER\n"
    assert deleted == "secret 'API_TOKEN' deleted\n"
    assert list(Secret.objects.values_list("name", flat=True)) == ["OTHER"]


def test_the_command_rotates_every_secret_to_the_first_key():
    with override_settings(FURROW_SECRETS_KEYS=[OLD_KEY]):
        set_secret("API_TOKEN", VALUE)

    with override_settings(FURROW_SECRETS_KEYS=[NEW_KEY, OLD_KEY]):
        assert set_secret_command("--rotate") == "re-encrypted 1 secrets with the first key\n"

    with override_settings(FURROW_SECRETS_KEYS=[NEW_KEY]):
        assert get_values(["API_TOKEN"]) == {"API_TOKEN": VALUE}


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["API_TOKEN"], "", "cannot be empty"),
        (["bad-name"], VALUE, "a secret name starts with a letter"),
        (["API_TOKEN", "--from-env", "FURROW_TEST_UNSET"], "", "is not set or empty"),
        (["NOPE", "--delete"], "", "unknown secret 'NOPE'"),
        ([], VALUE, "NAME is required"),
        (["API_TOKEN", "--list"], "", "take no NAME"),
    ],
)
def test_the_command_refuses_bad_use_and_stores_nothing(args, stdin, message):
    with pytest.raises(CommandError, match=message):
        set_secret_command(*args, stdin=stdin)

    assert not Secret.objects.exists()
