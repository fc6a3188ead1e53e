# Secrets the services read at start. Values never pass through the repository: the
# database passwords are generated here (so they live in the state bucket, whose access
# is limited to the deployer), the token signing key is generated offline and added as a
# version by hand (docs/deploy.md), so it never enters the Terraform state at all.

locals {
  secrets = {
    db_password_app        = "db-password-app"
    db_password_transcoder = "db-password-transcoder"
    token_signing_key      = "token-signing-key"
    webhook_secret_key     = "webhook-secret-key"
  }
}

resource "google_secret_manager_secret" "secrets" {
  for_each = local.secrets

  secret_id = each.value
  labels    = local.labels

  replication {
    user_managed {
      replicas {
        location = var.region
        customer_managed_encryption {
          kms_key_name = google_kms_crypto_key.keys["secrets"].id
        }
      }
    }
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.service_agents]
}

resource "google_secret_manager_secret_version" "db_password_app" {
  secret      = google_secret_manager_secret.secrets["db_password_app"].id
  secret_data = random_password.db_app.result
}

resource "google_secret_manager_secret_version" "db_password_transcoder" {
  secret      = google_secret_manager_secret.secrets["db_password_transcoder"].id
  secret_data = random_password.db_transcoder.result
}

# The key that encrypts the webhook endpoints' signing secrets in the database (api and
# dispatcher only): 32 random bytes, base64, generated here like the database passwords.
resource "random_id" "webhook_secret_key" {
  byte_length = 32
}

resource "google_secret_manager_secret_version" "webhook_secret_key" {
  secret      = google_secret_manager_secret.secrets["webhook_secret_key"].id
  secret_data = random_id.webhook_secret_key.b64_std
}
