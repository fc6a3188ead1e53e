# Two data buckets (uploads: originals; clips: processed output), a bucket for their
# access logs, and one for the notifier function's source archives.

resource "google_storage_bucket" "uploads" {
  name                        = "${var.name_prefix}-uploads"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  encryption {
    default_kms_key_name = google_kms_crypto_key.keys["storage"].id
  }

  # checkov:skip=CKV_GCP_78:Originals are transient input: the lifecycle rule below deletes them after uploads_retention_days, and versioning would keep every deleted original as a noncurrent copy.
  versioning {
    enabled = false
  }

  lifecycle_rule {
    condition {
      age = var.uploads_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket" "clips" {
  name                        = "${var.name_prefix}-clips"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  encryption {
    default_kms_key_name = google_kms_crypto_key.keys["storage"].id
  }

  # A clip overwritten or deleted by mistake stays recoverable for a while.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.clips_noncurrent_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      num_newer_versions = 3
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket" "access_logs" {
  # checkov:skip=CKV_GCP_62:This is the access-log sink itself; logging its own access would log the log writes.
  # checkov:skip=CKV_GCP_78:Log objects are written once and never overwritten; the retention policy protects them instead.
  name                        = "${var.name_prefix}-access-logs"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  encryption {
    default_kms_key_name = google_kms_crypto_key.keys["storage"].id
  }

  retention_policy {
    retention_period = 30 * 24 * 3600
  }

  lifecycle_rule {
    condition {
      age = 90
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

# The storage logs writer must be able to create objects in the log bucket.
resource "google_storage_bucket_iam_member" "access_logs_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}

resource "google_storage_bucket" "function_source" {
  name                        = "${var.name_prefix}-function-source"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  encryption {
    default_kms_key_name = google_kms_crypto_key.keys["storage"].id
  }

  # Source archives are named by their content hash: each is written once. Old ones
  # are only needed for a rollback, and the rollback path rebuilds them from git.
  # checkov:skip=CKV_GCP_78:Objects are content-addressed and never overwritten, so there is no earlier version to keep.
  versioning {
    enabled = false
  }

  lifecycle_rule {
    condition {
      age = 90
    }
    action {
      type = "Delete"
    }
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}
