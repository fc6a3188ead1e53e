# A topic, its dead-letter topic, pull subscriptions with exponential retry and
# dead-lettering, and a subscription that keeps dead letters for inspection.

resource "google_pubsub_topic" "this" {
  name                       = var.topic
  kms_key_name               = var.kms_key_name
  message_retention_duration = "86400s"
  labels                     = var.labels
}

resource "google_pubsub_topic" "dead_letter" {
  name         = "${var.topic}-dead-letter"
  kms_key_name = var.kms_key_name
  labels       = var.labels
}

resource "google_pubsub_subscription" "this" {
  for_each = var.subscriptions

  name                       = each.key
  topic                      = google_pubsub_topic.this.id
  ack_deadline_seconds       = each.value
  message_retention_duration = "604800s" # 7 days: an outage of the consumer loses nothing
  retain_acked_messages      = false
  enable_message_ordering    = false
  labels                     = var.labels

  expiration_policy {
    ttl = "" # never expires, even with no consumer for a while
  }

  retry_policy {
    minimum_backoff = "${var.minimum_backoff_seconds}s"
    maximum_backoff = "${var.maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }
}

# Holds what was dead-lettered until someone looks (the alert on the dead-letter topic
# says when). A message published to a topic without subscriptions would be lost.
resource "google_pubsub_subscription" "dead_letter_hold" {
  name                       = "${var.topic}-dead-letter-hold"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  labels                     = var.labels

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent: it must publish to the dead-letter
# topic and acknowledge (subscribe to) the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = var.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = var.subscriptions

  subscription = google_pubsub_subscription.this[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = var.pubsub_service_agent
}
