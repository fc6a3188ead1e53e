"""The transcoder: pulls tasks from ``video-tasks``, makes the clips with ffmpeg, and
reports on ``task-events``. Run with ``python -m services.transcoder``."""
