"""gunicorn's configuration of the auth (``gunicorn --config services/auth/gunicorn_config.py
'services.auth:create_app()'``, from the project root): see :mod:`shared.startup`."""

from shared.startup import close_after_large_bodies, start_process

start_process("auth")
pre_request = close_after_large_bodies
