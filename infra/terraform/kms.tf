# Customer-managed keys for the data the platform stores: videos and clips, messages,
# images, the database and secrets. One key per kind, so access can be revoked per kind.

resource "google_kms_key_ring" "platform" {
  name     = "idrl"
  location = var.region

  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key" "keys" {
  for_each = toset(["storage", "pubsub", "artifacts", "sql", "secrets"])

  name            = each.value
  key_ring        = google_kms_key_ring.platform.id
  rotation_period = "7776000s" # 90 days
  labels          = local.labels

  lifecycle {
    # Destroying a key makes everything encrypted with it unreadable.
    prevent_destroy = true
  }
}

# Google's service agents encrypt and decrypt on the platform's behalf; each gets only
# the key of its own kind.
resource "google_project_service_identity" "agents" {
  provider = google-beta
  for_each = toset(["pubsub.googleapis.com", "artifactregistry.googleapis.com", "sqladmin.googleapis.com", "secretmanager.googleapis.com"])

  project = var.project_id
  service = each.value
}

data "google_storage_project_service_account" "gcs" {}

locals {
  key_users = {
    storage   = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
    pubsub    = "serviceAccount:${google_project_service_identity.agents["pubsub.googleapis.com"].email}"
    artifacts = "serviceAccount:${google_project_service_identity.agents["artifactregistry.googleapis.com"].email}"
    sql       = "serviceAccount:${google_project_service_identity.agents["sqladmin.googleapis.com"].email}"
    secrets   = "serviceAccount:${google_project_service_identity.agents["secretmanager.googleapis.com"].email}"
  }
}

resource "google_kms_crypto_key_iam_member" "service_agents" {
  for_each = local.key_users

  crypto_key_id = google_kms_crypto_key.keys[each.key].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}
