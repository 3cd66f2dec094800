"""What the stores print about a database URL: never the password."""

import pytest

from autonomic.adapters.store.rows import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql://u@db/x", "postgresql://u@db/x"),
        ("postgresql://db/x", "postgresql://db/x"),
        ("sqlite:///a/b.db", "sqlite:///a/b.db"),
        # a query that holds '@' must not swallow the host
        (
            "postgresql://u:secret@db/x?options=-c%20x@y",
            "postgresql://u:***@db/x?options=-c%20x@y",
        ),
        # unencoded '@' and '/' in a password
        ("postgresql://u:p@ss@db/x", "postgresql://u:***@db/x"),
        ("postgresql://u:pa/ss@db/x", "postgresql://u:***@db/x"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url, shown):
    assert redact_url(url) == shown
    assert "secret" not in redact_url(url)
