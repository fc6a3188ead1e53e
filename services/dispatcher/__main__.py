"""``python -m services.dispatcher``: deliver webhooks until SIGTERM (attempts under way
finish first, within the attempt timeout)."""

import signal

from services.dispatcher.dispatch import Dispatcher
from shared import db
from shared.startup import start_process

settings = start_process("dispatcher")
engine = db.create_engine(settings)
dispatcher = Dispatcher(engine, settings)
signal.signal(signal.SIGTERM, lambda signum, frame: dispatcher.stop())
signal.signal(signal.SIGINT, lambda signum, frame: dispatcher.stop())
try:
    dispatcher.run()
finally:
    engine.dispose()
