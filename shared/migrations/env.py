from alembic import context

from shared.db import create_engine

settings = context.config.attributes["settings"]
engine = create_engine(settings)
try:
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
