# The notifier: a 2nd-gen Cloud Function (functions-framework CloudEvent handler
# `on_task_event`) triggered through Eventarc by every message on task-events, writing the
# task row in Cloud SQL through the Cloud SQL Python Connector over the VPC connector.

locals {
  repo_root = abspath("${path.module}/../..")
  # The function's code and what it imports; nothing of the other services.
  notifier_source_files = sort(tolist(setunion(
    fileset(local.repo_root, "shared/**/*.py"),
    fileset(local.repo_root, "services/__init__.py"),
    fileset(local.repo_root, "services/notifier/**/*.py"),
  )))
}

data "archive_file" "notifier_source" {
  type        = "zip"
  output_path = "${path.module}/.build/notifier-source.zip"

  source {
    content  = file("${path.module}/notifier/main.py")
    filename = "main.py"
  }

  # The runtime-only lock, hash-pinned: the function runs the same packages as the images.
  source {
    content  = file("${local.repo_root}/requirements-runtime.lock")
    filename = "requirements.txt"
  }

  dynamic "source" {
    for_each = local.notifier_source_files
    content {
      content  = file("${local.repo_root}/${source.value}")
      filename = source.value
    }
  }
}

resource "google_storage_bucket_object" "notifier_source" {
  # Named by content: new code, new object, new function revision; same code, no change.
  name   = "notifier/${data.archive_file.notifier_source.output_sha256}.zip"
  bucket = google_storage_bucket.function_source.name
  source = data.archive_file.notifier_source.output_path
}

resource "google_cloudfunctions2_function" "notifier" {
  name        = "notifier"
  location    = var.region
  description = "Applies TaskStatusChanged events from task-events to the tasks table."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "on_task_event"
    service_account = google_service_account.deployer.id

    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.notifier_source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.runtime["notifier"].email
    available_memory                 = "512Mi"
    timeout_seconds                  = 60
    min_instance_count               = 0
    max_instance_count               = 20
    max_instance_request_concurrency = 1
    # Only Eventarc's push reaches it; nothing on the internet can.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    vpc_connector                  = google_vpc_access_connector.main.id
    vpc_connector_egress_settings  = "PRIVATE_RANGES_ONLY"

    environment_variables = merge(local.common_env, {
      SERVICE_NAME = "notifier"
      DB_USER      = google_sql_user.app.name
      # Links in the webhook payloads the notifier writes.
      PUBLIC_BASE_URL = "https://${var.domains[0]}"
      # Up to max_instance_count instances, one connection each, within Cloud SQL's limit.
      DB_POOL_SIZE    = "1"
      DB_MAX_OVERFLOW = "1"
    })

    secret_environment_variables {
      key        = "DB_PASSWORD"
      project_id = var.project_id
      secret     = google_secret_manager_secret.secrets["db_password_app"].secret_id
      version    = "latest"
    }
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = module.task_events.topic_id
    retry_policy          = "RETRY_POLICY_RETRY" # the handler raises to be retried, returns to drop
    service_account_email = google_service_account.notifier_trigger.email
  }

  depends_on = [
    google_project_iam_member.cloudsql_client,
    google_secret_manager_secret_iam_member.readers,
    google_project_iam_member.notifier_trigger_receiver,
  ]
}
