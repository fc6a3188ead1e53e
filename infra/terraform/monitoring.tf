# Alert policies of the original system (DESIGN section 10), an uptime check of the load
# balancer, two queue alerts, and the operations dashboard.

resource "google_monitoring_notification_channel" "email" {
  for_each = toset(var.alert_emails)

  display_name = "idrl on-call: ${each.value}"
  type         = "email"
  labels = {
    email_address = each.value
  }
}

locals {
  notification_channels = [for channel in google_monitoring_notification_channel.email : channel.id]

  # The original system's autoscaler policies. Utilization and capacity are ratios: the
  # console's 75 % is 0.75 here.
  autoscaler_threshold_policies = {
    utilization_75_5m = {
      display_name = "Autoscaler - current utilization above 75% for 5 min"
      metric       = "autoscaler.googleapis.com/current_utilization"
      threshold    = 0.75
      duration     = "300s"
    }
    utilization_90_30m = {
      display_name = "Autoscaler - current utilization above 90% for 30 min"
      metric       = "autoscaler.googleapis.com/current_utilization"
      threshold    = 0.90
      duration     = "1800s"
    }
    capacity_75_5m = {
      display_name = "Autoscaler - serving capacity above 75% for 5 min"
      metric       = "autoscaler.googleapis.com/capacity"
      threshold    = 0.75
      duration     = "300s"
    }
  }
}

resource "google_monitoring_alert_policy" "autoscaler" {
  for_each = local.autoscaler_threshold_policies

  display_name          = each.value.display_name
  combiner              = "OR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = each.value.display_name
    condition_threshold {
      filter          = "resource.type = \"autoscaler\" AND metric.type = \"${each.value.metric}\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.threshold
      duration        = each.value.duration

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MEAN"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    content   = "An autoscaler of the idrl platform has run hot for ${each.value.duration}: check the group's size against its max replicas (variables *_max_replicas) and the dashboard's backlog and error charts."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "autoscaler_capacity_absent" {
  display_name          = "Autoscaler - serving capacity: no data for 1 h"
  combiner              = "OR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "autoscaler.googleapis.com/capacity absent for 1 h"
    condition_absent {
      filter   = "resource.type = \"autoscaler\" AND metric.type = \"autoscaler.googleapis.com/capacity\""
      duration = "3600s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MEAN"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    content   = "No autoscaler capacity data for an hour: an autoscaler was deleted, turned off, or its group is gone."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "instance_group_size" {
  display_name          = "Instance group - size above ${var.instance_group_size_alert} instances within 1 h"
  combiner              = "OR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "compute.googleapis.com/instance_group/size > ${var.instance_group_size_alert}"
    condition_threshold {
      filter          = "resource.type = \"instance_group\" AND metric.type = \"compute.googleapis.com/instance_group/size\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.instance_group_size_alert
      duration        = "0s"

      # The largest size seen in each hour: any moment above the threshold counts.
      aggregations {
        alignment_period   = "3600s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    content   = "An instance group grew past ${var.instance_group_size_alert} instances: expected under a burst of tasks, worth a look (cost, and whether the backlog is being absorbed)."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_uptime_check_config" "load_balancer" {
  display_name       = "Load balancer - https://${var.domains[0]}/healthz"
  period             = "60s"
  timeout            = "10s"
  log_check_failures = true

  http_check {
    path           = "/healthz"
    port           = 443
    use_ssl        = true
    validate_ssl   = true
    request_method = "GET"

    accepted_response_status_codes {
      status_class = "STATUS_CLASS_2XX"
    }
  }

  monitored_resource {
    type = "uptime_url"
    labels = {
      project_id = var.project_id
      host       = var.domains[0]
    }
  }
}

resource "google_monitoring_alert_policy" "uptime" {
  display_name          = "Load balancer - uptime check failing"
  combiner              = "OR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "uptime check failed from more than one location"
    condition_threshold {
      filter          = "resource.type = \"uptime_url\" AND metric.type = \"monitoring.googleapis.com/uptime_check/check_passed\" AND metric.labels.check_id = \"${google_monitoring_uptime_check_config.load_balancer.uptime_check_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 1
      duration        = "60s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_NEXT_OLDER"
        cross_series_reducer = "REDUCE_COUNT_FALSE"
        group_by_fields      = ["resource.label.host"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    content   = "https://${var.domains[0]}/healthz did not answer 2xx within 10 s from several checker locations."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "video_tasks_oldest_unacked" {
  display_name          = "video-tasks - oldest unacked message older than ${var.oldest_unacked_alert_seconds} s"
  combiner              = "OR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "oldest_unacked_message_age on video-tasks-transcoder"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"video-tasks-transcoder\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.oldest_unacked_alert_seconds
      duration        = "300s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    content   = "A submitted task has waited too long: the transcoders are stuck, at max replicas, or failing every message. Check the dashboard's backlog and instances charts and the transcoder logs."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "Pub/Sub - a dead-letter topic received messages"
  combiner              = "OR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "messages published to a dead-letter topic"
    condition_threshold {
      filter          = "resource.type = \"pubsub_topic\" AND resource.labels.topic_id = one_of(\"${module.video_tasks.dead_letter_topic_name}\", \"${module.task_events.dead_letter_topic_name}\") AND metric.type = \"pubsub.googleapis.com/topic/send_message_operation_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  conditions {
    display_name = "messages dead-lettered by a subscription"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    content   = "A message was delivered max_delivery_attempts times without being acknowledged. The code fails such tasks itself, so this means a bug or an outage: read the message on the *-dead-letter-hold subscription and the consumer's logs."
    mime_type = "text/markdown"
  }
}

# Lines the services log at ERROR or above, by service (logs are JSON with `service`).
resource "google_logging_metric" "service_errors" {
  name   = "idrl/service_errors"
  filter = "severity >= ERROR AND jsonPayload.service:*"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "idrl service errors"

    labels {
      key         = "service"
      value_type  = "STRING"
      description = "auth, api, transcoder, notifier"
    }
  }

  label_extractors = {
    service = "EXTRACT(jsonPayload.service)"
  }
}

locals {
  dashboard_charts = {
    "Backlog - undelivered messages on video-tasks-transcoder" = {
      filter     = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"video-tasks-transcoder\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      aligner    = "ALIGN_MEAN"
      reducer    = "REDUCE_NONE"
      group_by   = []
      chart_type = "STACKED_AREA"
    }
    "Backlog - oldest unacked message age (s)" = {
      filter     = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"video-tasks-transcoder\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      aligner    = "ALIGN_MAX"
      reducer    = "REDUCE_NONE"
      group_by   = []
      chart_type = "LINE"
    }
    "Instances per group" = {
      filter     = "resource.type = \"instance_group\" AND metric.type = \"compute.googleapis.com/instance_group/size\""
      aligner    = "ALIGN_MAX"
      reducer    = "REDUCE_SUM"
      group_by   = ["resource.label.instance_group_name"]
      chart_type = "LINE"
    }
    "Processing time - delivery to ack on video-tasks-transcoder, p95 (ms)" = {
      filter     = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"video-tasks-transcoder\" AND metric.type = \"pubsub.googleapis.com/subscription/ack_latencies\""
      aligner    = "ALIGN_PERCENTILE_95"
      reducer    = "REDUCE_NONE"
      group_by   = []
      chart_type = "LINE"
    }
    "Processing time - delivery to ack on video-tasks-transcoder, p50 (ms)" = {
      filter     = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"video-tasks-transcoder\" AND metric.type = \"pubsub.googleapis.com/subscription/ack_latencies\""
      aligner    = "ALIGN_PERCENTILE_50"
      reducer    = "REDUCE_NONE"
      group_by   = []
      chart_type = "LINE"
    }
    "Errors - load balancer 5xx responses per backend" = {
      filter     = "resource.type = \"https_lb_rule\" AND metric.type = \"loadbalancing.googleapis.com/https/request_count\" AND metric.labels.response_code_class = 500"
      aligner    = "ALIGN_RATE"
      reducer    = "REDUCE_SUM"
      group_by   = ["resource.label.backend_target_name"]
      chart_type = "STACKED_BAR"
    }
    "Errors - service log lines at ERROR, per service" = {
      filter     = "metric.type = \"logging.googleapis.com/user/${google_logging_metric.service_errors.name}\""
      aligner    = "ALIGN_RATE"
      reducer    = "REDUCE_SUM"
      group_by   = ["metric.label.service"]
      chart_type = "STACKED_BAR"
    }
    "Errors - dead-lettered messages" = {
      filter     = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\""
      aligner    = "ALIGN_SUM"
      reducer    = "REDUCE_SUM"
      group_by   = ["resource.label.subscription_id"]
      chart_type = "STACKED_BAR"
    }
    "Autoscaler - current utilization" = {
      filter     = "resource.type = \"autoscaler\" AND metric.type = \"autoscaler.googleapis.com/current_utilization\""
      aligner    = "ALIGN_MEAN"
      reducer    = "REDUCE_NONE"
      group_by   = []
      chart_type = "LINE"
    }
    "Autoscaler - serving capacity" = {
      filter     = "resource.type = \"autoscaler\" AND metric.type = \"autoscaler.googleapis.com/capacity\""
      aligner    = "ALIGN_MEAN"
      reducer    = "REDUCE_NONE"
      group_by   = []
      chart_type = "LINE"
    }
  }

  dashboard_titles = sort(keys(local.dashboard_charts))
}

resource "google_monitoring_dashboard" "operations" {
  dashboard_json = jsonencode({
    displayName = "idrl - operations"
    mosaicLayout = {
      columns = 12
      tiles = [
        for index, title in local.dashboard_titles : {
          xPos   = (index % 2) * 6
          yPos   = floor(index / 2) * 4
          width  = 6
          height = 4
          widget = {
            title = title
            xyChart = {
              dataSets = [{
                plotType = local.dashboard_charts[title].chart_type
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter = local.dashboard_charts[title].filter
                    aggregation = {
                      alignmentPeriod    = "60s"
                      perSeriesAligner   = local.dashboard_charts[title].aligner
                      crossSeriesReducer = local.dashboard_charts[title].reducer
                      groupByFields      = local.dashboard_charts[title].group_by
                    }
                  }
                }
              }]
            }
          }
        }
      ]
    }
  })
}

# --- webhooks (docs/webhooks.md) -------------------------------------------------------------

# A delivery failed for good: its last attempt failed and no retry follows.
resource "google_logging_metric" "webhook_deliveries_failed" {
  name   = "idrl/webhook_deliveries_failed"
  filter = "jsonPayload.service = \"dispatcher\" AND jsonPayload.delivery_failed = true"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "idrl webhook deliveries failed"
  }
}

# Each dispatcher logs the age of the oldest pending delivery every minute.
resource "google_logging_metric" "webhook_oldest_pending" {
  name            = "idrl/webhook_oldest_pending_seconds"
  filter          = "jsonPayload.service = \"dispatcher\" AND jsonPayload.oldest_pending_seconds >= 0"
  value_extractor = "EXTRACT(jsonPayload.oldest_pending_seconds)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "s"
    display_name = "idrl oldest pending webhook delivery"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 20
      growth_factor      = 2
      scale              = 1
    }
  }
}

resource "google_monitoring_alert_policy" "webhook_deliveries_failing" {
  display_name          = "webhooks - more than ${var.webhook_failures_alert_count} deliveries failed for good in 15 min"
  combiner              = "OR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "webhook deliveries failed"
    condition_threshold {
      filter          = "resource.type = \"gce_instance\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.webhook_deliveries_failed.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.webhook_failures_alert_count
      duration        = "0s"

      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    content   = "Webhook deliveries are failing after a day of retries, or at once on a 4xx. Check the dispatcher logs (webhook delivery failed) for the endpoints and answers; an endpoint that fails for 5 days is disabled by the dispatcher."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "webhook_backlog" {
  display_name          = "webhooks - oldest pending delivery older than ${var.webhook_backlog_alert_seconds} s"
  combiner              = "OR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "oldest pending webhook delivery"
    condition_threshold {
      filter          = "resource.type = \"gce_instance\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.webhook_oldest_pending.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.webhook_backlog_alert_seconds
      duration        = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_PERCENTILE_99"
        cross_series_reducer = "REDUCE_MAX"
      }

      trigger {
        count = 1
      }
    }

  }

  documentation {
    content   = "A webhook delivery has waited too long: the dispatchers are down, stuck on the database, or an endpoint keeps failing with retries due. Check that the dispatcher group has running instances and the dispatcher logs (webhook backlog, webhook attempt failed)."
    mime_type = "text/markdown"
  }
}

# The dispatcher group's instances: alert when none runs (no backlog lines arrive either).
resource "google_monitoring_alert_policy" "webhook_dispatcher_absent" {
  display_name          = "webhooks - no dispatcher reported for 15 min"
  combiner              = "OR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "no webhook backlog line"
    condition_absent {
      filter   = "resource.type = \"gce_instance\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.webhook_oldest_pending.name}\""
      duration = "900s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_COUNT"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    content   = "No dispatcher has logged its backlog line for 15 minutes: the dispatcher group has no running instance, so no webhook is delivered."
    mime_type = "text/markdown"
  }
}
