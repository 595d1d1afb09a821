"""Thread-sensitivity with ATOMIC_REQUESTS: the bridged coroutine's ORM calls join the view's
transaction, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import pytest
from django.test import Client

from .conftest import ALL_DATABASES, POSTGRES_ALIAS, POSTGRES_PROBLEM
from .notes.models import Note

DB = ALL_DATABASES
SQLITE = pytest.param("default", marks=DB, id="sqlite")
if POSTGRES_ALIAS:
    POSTGRES = pytest.param("pg", marks=DB, id="postgres")
else:
    POSTGRES = pytest.param("pg", marks=pytest.mark.skip(reason=POSTGRES_PROBLEM), id="postgres")


@pytest.mark.parametrize("alias", [SQLITE, POSTGRES])
class TestAtomicRequests:
    def test_the_coroutine_sees_the_views_row_on_the_views_thread(self, alias: str) -> None:
        reply = Client().get(f"/write/{alias}").json()
        assert reply["saw_view_row"] is True
        assert reply["in_atomic_block"] is True  # inside the request's transaction
        assert reply["orm_thread"] == reply["view_thread"]
        texts = sorted(Note.objects.using(alias).values_list("text", flat=True))
        assert texts == ["coroutine", "view"]

    def test_a_failing_view_rolls_back_both_rows(self, alias: str) -> None:
        # The view got past the bridged call (both rows written) and then failed.
        with pytest.raises(RuntimeError, match="roll everything back"):
            Client().get(f"/write/{alias}?fail=1")
        assert Note.objects.using(alias).count() == 0


@pytest.mark.parametrize("alias", [POSTGRES])
def test_without_thread_sensitivity_the_coroutine_is_outside_the_transaction(alias: str) -> None:
    # The control: on another thread's connection the uncommitted row is invisible, and the
    # coroutine's own row commits on its own, so the view's rollback cannot remove it.
    with pytest.raises(RuntimeError, match="roll everything back"):
        Client().get(f"/write/{alias}?bridge=plain&fail=1")
    assert list(Note.objects.using(alias).values_list("text", flat=True)) == ["coroutine"]
