"""The notifier: applies ``TaskStatusChanged`` events from ``task-events`` to the task rows.

On Google Cloud it is a 2nd-gen Cloud Function (``main.on_task_event``, Eventarc Pub/Sub
trigger); locally ``python -m services.notifier`` pulls ``task-events-notifier`` and calls
the very same function with the CloudEvent Eventarc would deliver.
"""
