resource "google_sql_database_instance" "main" {
  # checkov:skip=CKV_GCP_79:The platform is specified and tested on PostgreSQL 15 (DESIGN section 8, the local stack's postgresql-15); a major upgrade is a planned change of its own.
  name                = "idrl-pg15"
  database_version    = "POSTGRES_15"
  region              = var.region
  encryption_key_name = google_kms_crypto_key.keys["sql"].id
  deletion_protection = var.db_deletion_protection

  settings {
    tier              = var.db_tier
    edition           = "ENTERPRISE"
    availability_type = var.db_availability_type
    disk_type         = "PD_SSD"
    disk_size         = var.db_disk_size_gb
    disk_autoresize   = true
    user_labels       = local.labels

    ip_configuration {
      # Private IP only: reachable from the VPC (VMs, the function's connector, the
      # Cloud Build private pool), never from the internet.
      ipv4_enabled                                  = false
      private_network                               = google_compute_network.main.id
      enable_private_path_for_google_cloud_services = true
      # Every client is a Cloud SQL connector, which presents the instance-issued client
      # certificate: plain TLS (or no TLS) from anything else is refused.
      ssl_mode = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
    }

    backup_configuration {
      enabled                        = true
      start_time                     = "03:00"
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = var.db_log_retention_days

      backup_retention_settings {
        retained_backups = var.db_backup_retention_days
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7 # Sunday
      hour         = 4
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = true
      record_client_address   = false
    }

    # Logging flags the CIS benchmark asks for; statements are logged through pgAudit
    # (DDL and role changes), not every query, so task data stays out of the logs.
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_executor_stats"
      value = "off"
    }
    database_flags {
      name  = "log_parser_stats"
      value = "off"
    }
    database_flags {
      name  = "log_planner_stats"
      value = "off"
    }
    database_flags {
      name  = "log_statement_stats"
      value = "off"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "pgaudit.log"
      value = "role,ddl"
    }
  }

  depends_on = [
    google_service_networking_connection.private_services,
    google_kms_crypto_key_iam_member.service_agents,
  ]
}

resource "google_sql_database" "app" {
  name     = "idrl"
  instance = google_sql_database_instance.main.name
}

# The application's owner role: it runs the migrations and owns the tables. auth, api and
# the notifier connect as it.
resource "random_password" "db_app" {
  length           = 32
  special          = true
  override_special = "-_.~" # survives env files and connection strings unquoted
}

resource "google_sql_user" "app" {
  name     = "idrl"
  instance = google_sql_database_instance.main.name
  password = random_password.db_app.result
}

# The transcoder's read-only role is NOT a google_sql_user: users made through the Cloud
# SQL API join cloudsqlsuperuser. The pipeline creates it with plain SQL, SELECT on
# `tasks` only (infra/terraform/scripts/db_roles.py); Terraform only holds its password.
resource "random_password" "db_transcoder" {
  length           = 32
  special          = true
  override_special = "-_.~"
}
