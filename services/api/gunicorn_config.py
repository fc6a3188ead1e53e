"""gunicorn's configuration of the api: ``gunicorn --config services/api/gunicorn_config.py
'services.api:create_app()'`` (from the project root; the Dockerfile and the local stack
both start it so).

gunicorn reads this file in its master process, before any worker starts. A production
process missing a setting stops here, once, with the names and no traceback (failing in
``create_app`` instead, each worker would exit and be replaced). The JSON logging set up
here is inherited by the workers; the app factory does not touch the process's logging.
"""

from shared.startup import close_after_large_bodies, start_process

start_process("api")
pre_request = close_after_large_bodies
