data "google_project" "this" {
  project_id = var.project_id
}

locals {
  labels = {
    app        = "idrl"
    managed-by = "terraform"
  }

  image_base = "${var.region}-docker.pkg.dev/${var.project_id}/${var.artifact_repository}"
  images = {
    for service in ["api", "auth", "transcoder", "notifier", "dispatcher"] :
    service => "${local.image_base}/${service}:${var.image_tag}"
  }

  topics = {
    video_tasks = "video-tasks"
    task_events = "task-events"
  }

  pubsub_service_agent = "serviceAccount:${google_project_service_identity.agents["pubsub.googleapis.com"].email}"

  # Environment every service shares; per-service additions are next to each service.
  common_env = {
    ENVIRONMENT              = "production"
    GOOGLE_CLOUD_PROJECT     = var.project_id
    INSTANCE_CONNECTION_NAME = google_sql_database_instance.main.connection_name
    DB_NAME                  = google_sql_database.app.name
    DB_IP_TYPE               = "private"
    UPLOADS_BUCKET           = google_storage_bucket.uploads.name
    CLIPS_BUCKET             = google_storage_bucket.clips.name
    TOPIC_VIDEO_TASKS        = local.topics.video_tasks
    TOPIC_TASK_EVENTS        = local.topics.task_events
    LOG_LEVEL                = "INFO"
  }
}

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudkms.googleapis.com",
    "compute.googleapis.com",
    "containerscanning.googleapis.com",
    "eventarc.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
    "vpcaccess.googleapis.com",
  ])

  service = each.value
  # Turning an API off on destroy would break anything else living in the project.
  disable_on_destroy = false
}

resource "google_artifact_registry_repository" "images" {
  repository_id = var.artifact_repository
  location      = var.region
  format        = "DOCKER"
  description   = "Images of auth, api, transcoder, notifier and dispatcher, tagged with the commit they were built from."
  kms_key_name  = google_kms_crypto_key.keys["artifacts"].id
  labels        = local.labels

  docker_config {
    # A commit tag always names the same image: rollbacks redeploy exactly what ran.
    immutable_tags = true
  }

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 30
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "7776000s" # 90 days, unless among the 30 most recent
    }
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.service_agents]
}
