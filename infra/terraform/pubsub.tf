module "video_tasks" {
  source = "./modules/pubsub_queue"

  topic = local.topics.video_tasks
  subscriptions = {
    "video-tasks-transcoder" = var.video_tasks_ack_deadline_seconds
  }
  max_delivery_attempts = var.max_delivery_attempts
  # A failed clip is retried after 30 s, then 60 s... up to 10 min: transient causes
  # (a source host rate-limiting us, a full disk) get time to clear.
  minimum_backoff_seconds = 30
  maximum_backoff_seconds = 600
  kms_key_name            = google_kms_crypto_key.keys["pubsub"].id
  pubsub_service_agent    = local.pubsub_service_agent
  labels                  = local.labels

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

module "task_events" {
  source = "./modules/pubsub_queue"

  topic = local.topics.task_events
  # In production the notifier function consumes task-events through the subscription its
  # Eventarc trigger creates (dead-lettering wired by cloudbuild.yaml). The pull
  # subscription is for the notifier's pull runner image only.
  subscriptions = var.notifier_pull_subscription ? {
    "task-events-notifier" = var.task_events_ack_deadline_seconds
  } : {}
  max_delivery_attempts   = var.max_delivery_attempts
  minimum_backoff_seconds = 10
  maximum_backoff_seconds = 600
  kms_key_name            = google_kms_crypto_key.keys["pubsub"].id
  pubsub_service_agent    = local.pubsub_service_agent
  labels                  = local.labels

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}
