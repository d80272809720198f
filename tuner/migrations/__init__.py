"""Alembic migrations of the ``tuner_*`` tables (version table ``tuner_alembic_version``).

Run them with :func:`tuner.store.upgrade`. For the ``alembic`` command, use the ini file
next to this one; the URL comes from ``TUNER_DB_URL`` (or the embedded default)::

    TUNER_DB_URL=postgresql+psycopg://... alembic -c tuner/migrations/alembic.ini upgrade head
    alembic -c tuner/migrations/alembic.ini revision --autogenerate -m "add a column"
"""
