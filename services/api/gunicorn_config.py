"""gunicorn's configuration of the api (``gunicorn --config services/api/gunicorn_config.py
'services.api:create_app()'``, from the project root): see :mod:`shared.startup`."""

from shared.startup import close_after_large_bodies, start_process

start_process("api")
pre_request = close_after_large_bodies
