"""Configure Django for the tests in this package only, and keep the rest of the run apart.

Settings are installed with ``settings.configure`` while this package is collected, so no
``DJANGO_SETTINGS_MODULE`` leaks to other tests. The app's ``ready()`` installs a
thread-sensitive default bridge; other tests keep the default they had, and the tests
here get the configured one through an autouse fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import django
import pytest
from django.apps import apps
from django.conf import settings

import bridge
from bridge.django.apps import BridgeConfig

from . import settings as test_settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _postgres_problem() -> str | None:
    import psycopg

    pg = test_settings.POSTGRES
    try:
        psycopg.connect(
            host=pg["HOST"],
            port=pg["PORT"],
            dbname=pg["NAME"],
            user=pg["USER"],
            password=pg["PASSWORD"],
            connect_timeout=2,
        ).close()
    except Exception as exc:
        return f"no PostgreSQL at {pg['HOST']}:{pg['PORT']} ({exc}); start one or set PGHOST"
    return None


POSTGRES_PROBLEM = _postgres_problem()
# Under CI the alias is always there, so a missing server fails the tests instead.
POSTGRES_ALIAS = IN_CI or POSTGRES_PROBLEM is None

#: ATOMIC_REQUESTS opens a transaction on every configured alias, so requests need them all.
ALL_DATABASES = pytest.mark.django_db(
    transaction=True, databases=["default", "pg"] if POSTGRES_ALIAS else None
)

if not settings.configured:
    values = {name: getattr(test_settings, name) for name in dir(test_settings) if name.isupper()}
    values["DATABASES"] = dict(values["DATABASES"])
    if POSTGRES_ALIAS:
        values["DATABASES"]["pg"] = values.pop("POSTGRES")
    _outside = bridge.get_default()
    settings.configure(**values)
    django.setup()
    bridge.set_default(_outside)


def app_config() -> BridgeConfig:
    config = apps.get_app_config("bridge")
    assert isinstance(config, BridgeConfig)
    return config


@pytest.fixture(autouse=True)
def configured_bridge() -> Iterator[bridge.Bridge]:
    """The default bridge that ``bridge.django`` installed, in force for each test here."""
    installed = app_config().bridge
    assert installed is not None
    previous = bridge.set_default(installed)
    try:
        yield installed
    finally:
        if previous is not None:
            bridge.set_default(previous)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings: None) -> None:
    """Before the test databases are made: under CI, a missing PostgreSQL is a failure."""
    if IN_CI and POSTGRES_PROBLEM is not None:
        pytest.fail(f"CI must run the PostgreSQL tests, but: {POSTGRES_PROBLEM}")
