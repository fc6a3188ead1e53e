# One service account per service, each with only what its code does (docs/iam.md says
# why each role is there). Grants sit on the single resource they concern wherever the
# API allows it; project-level grants are only for what has no resource-level IAM.

locals {
  runtime_accounts = {
    api        = "HTTP API for tasks"
    auth       = "Sign-up, login and token keys"
    transcoder = "Video worker (ffmpeg)"
    notifier   = "Task status notifier (Cloud Function)"
    dispatcher = "Webhook dispatcher"
  }
  vm_services = ["api", "auth", "transcoder", "dispatcher"]
}

resource "google_service_account" "runtime" {
  for_each = local.runtime_accounts

  account_id   = "idrl-${each.key}"
  display_name = "idrl ${each.key}: ${each.value}"
}

# Eventarc pushes task-events to the notifier function with this identity.
resource "google_service_account" "notifier_trigger" {
  account_id   = "idrl-notifier-trigger"
  display_name = "idrl notifier: Eventarc trigger identity"
}

# --- project level: only roles that have no narrower resource ---------------------------

# Cloud SQL has no per-instance IAM: cloudsql.client lets the connector fetch the
# instance's certificate; database privileges are still the PostgreSQL roles'.
resource "google_project_iam_member" "cloudsql_client" {
  for_each = toset(["api", "auth", "transcoder", "notifier", "dispatcher"])

  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = google_service_account.runtime[each.key].member
}

# VMs ship their container logs and metrics themselves (COS logging and monitoring agents).
resource "google_project_iam_member" "vm_log_writer" {
  for_each = toset(local.vm_services)

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.runtime[each.key].member
}

resource "google_project_iam_member" "vm_metric_writer" {
  for_each = toset(local.vm_services)

  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = google_service_account.runtime[each.key].member
}

resource "google_project_iam_member" "notifier_trigger_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.notifier_trigger.member
}

# --- images ----------------------------------------------------------------------------

resource "google_artifact_registry_repository_iam_member" "vm_image_reader" {
  for_each = toset(local.vm_services)

  repository = google_artifact_registry_repository.images.name
  location   = google_artifact_registry_repository.images.location
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.runtime[each.key].member
}

# --- secrets ---------------------------------------------------------------------------

locals {
  secret_readers = {
    "api/db_password_app"               = { account = "api", secret = "db_password_app" }
    "auth/db_password_app"              = { account = "auth", secret = "db_password_app" }
    "auth/token_signing_key"            = { account = "auth", secret = "token_signing_key" }
    "notifier/db_password_app"          = { account = "notifier", secret = "db_password_app" }
    "transcoder/db_password_transcoder" = { account = "transcoder", secret = "db_password_transcoder" }
    "dispatcher/db_password_app"        = { account = "dispatcher", secret = "db_password_app" }
    "dispatcher/webhook_secret_key"     = { account = "dispatcher", secret = "webhook_secret_key" }
    "api/webhook_secret_key"            = { account = "api", secret = "webhook_secret_key" }
  }
}

resource "google_secret_manager_secret_iam_member" "readers" {
  for_each = local.secret_readers

  secret_id = google_secret_manager_secret.secrets[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime[each.value.account].member
}

# --- buckets ---------------------------------------------------------------------------

# The notifier only removes clips of deleted tasks: delete, get and list, nothing else.
resource "google_project_iam_custom_role" "clips_janitor" {
  role_id     = "idrlClipsJanitor"
  title       = "idrl clips janitor"
  description = "Read and delete objects; cannot create or overwrite them."
  permissions = ["storage.objects.delete", "storage.objects.get", "storage.objects.list"]
}

locals {
  bucket_grants = {
    "api/uploads"        = { account = "api", bucket = google_storage_bucket.uploads.name, role = "roles/storage.objectUser" }
    "api/clips"          = { account = "api", bucket = google_storage_bucket.clips.name, role = "roles/storage.objectUser" }
    "transcoder/uploads" = { account = "transcoder", bucket = google_storage_bucket.uploads.name, role = "roles/storage.objectViewer" }
    "transcoder/clips"   = { account = "transcoder", bucket = google_storage_bucket.clips.name, role = "roles/storage.objectUser" }
    "notifier/clips"     = { account = "notifier", bucket = google_storage_bucket.clips.name, role = google_project_iam_custom_role.clips_janitor.name }
  }
}

resource "google_storage_bucket_iam_member" "services" {
  for_each = local.bucket_grants

  bucket = each.value.bucket
  role   = each.value.role
  member = google_service_account.runtime[each.value.account].member
}

# The function's build reads its source archive.
resource "google_storage_bucket_iam_member" "function_source_reader" {
  bucket = google_storage_bucket.function_source.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.deployer.member
}

# --- Pub/Sub ---------------------------------------------------------------------------

resource "google_pubsub_topic_iam_member" "publishers" {
  for_each = {
    "api/video_tasks"        = { account = "api", topic = module.video_tasks.topic_id }
    "api/task_events"        = { account = "api", topic = module.task_events.topic_id }
    "transcoder/task_events" = { account = "transcoder", topic = module.task_events.topic_id }
    # The notifier lets a user's held parts and tasks out the moment the user has room
    # (the outbox rows it writes; the api's relay publishes any it could not).
    "notifier/video_tasks" = { account = "notifier", topic = module.video_tasks.topic_id }
  }

  topic  = each.value.topic
  role   = "roles/pubsub.publisher"
  member = google_service_account.runtime[each.value.account].member
}

resource "google_pubsub_subscription_iam_member" "transcoder_subscriber" {
  subscription = module.video_tasks.subscription_ids["video-tasks-transcoder"]
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.runtime["transcoder"].member
}

resource "google_pubsub_subscription_iam_member" "notifier_subscriber" {
  for_each = module.task_events.subscription_ids

  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.runtime["notifier"].member
}

# --- signed URLs -----------------------------------------------------------------------

# V4 signed download URLs are signed with IAM signBlob as the api's own account: it may
# mint signatures for itself and for no other account.
resource "google_service_account_iam_member" "api_signs_as_itself" {
  service_account_id = google_service_account.runtime["api"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.runtime["api"].member
}

# --- Eventarc ----------------------------------------------------------------------------

resource "google_cloud_run_v2_service_iam_member" "notifier_trigger_invoker" {
  name     = google_cloudfunctions2_function.notifier.name
  location = var.region
  role     = "roles/run.invoker"
  member   = google_service_account.notifier_trigger.member
}

# Pub/Sub mints the OIDC token of the push to the function as the trigger's account.
resource "google_service_account_iam_member" "pubsub_mints_trigger_tokens" {
  service_account_id = google_service_account.notifier_trigger.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}
