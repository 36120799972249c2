"""Alembic environment of the results store.

The harness runs migrations on a connection it already holds (``config.attributes["connection"]``,
inside its own locked transaction); the ``alembic`` command line works too, given the store's URL as
``sqlalchemy.url`` (``alembic -c results/migrations/alembic.ini -x url=sqlite:///harness-out/results.sqlite upgrade head``).
"""

from alembic import context
from sqlalchemy import create_engine

config = context.config


def _migrate(connection) -> None:
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _migrate(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the store's URL: alembic -x url=sqlite:///harness-out/results.sqlite upgrade head")
    engine = create_engine(url)
    with engine.connect() as own:
        _migrate(own)
        own.commit()
    engine.dispose()
