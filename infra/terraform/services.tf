# auth and api: stateless HTTP services behind the load balancer, autoscaled on load
# balancing utilization. transcoder: the worker, autoscaled on the queue's backlog.

locals {
  secret_version = { for key, secret in google_secret_manager_secret.secrets : key => "${secret.id}/versions/latest" }
}

module "auth" {
  source = "./modules/container_mig"

  name                  = "auth"
  region                = var.region
  image                 = local.images["auth"]
  service_account_email = google_service_account.runtime["auth"].email
  subnetwork            = google_compute_subnetwork.main.self_link
  machine_type          = var.http_machine_type
  network_tags          = ["idrl-http"]
  named_port            = 8080
  health_check_port     = 8080
  health_check_path     = "/healthz"
  stop_timeout_seconds  = 40 # gunicorn's graceful timeout (30 s) and some margin
  labels                = local.labels

  env = merge(local.common_env, {
    SERVICE_NAME             = "auth"
    TRUSTED_PROXY_HOPS       = "2" # Google's front end appends "<client>, <load balancer>"
    DB_USER                  = google_sql_user.app.name
    TOKEN_SIGNING_KEY_SECRET = local.secret_version["token_signing_key"]
    # The env file holds one line per variable: line breaks travel as "\n" escapes,
    # which shared.tokens.public_keys_from_pem reads back.
    TOKEN_PREVIOUS_PUBLIC_KEYS = replace(var.token_previous_public_keys, "\n", "\\n")
  })
  secret_env = {
    DB_PASSWORD = local.secret_version["db_password_app"]
  }
}

module "api" {
  source = "./modules/container_mig"

  name                  = "api"
  region                = var.region
  image                 = local.images["api"]
  service_account_email = google_service_account.runtime["api"].email
  subnetwork            = google_compute_subnetwork.main.self_link
  machine_type          = var.http_machine_type
  network_tags          = ["idrl-http"]
  named_port            = 8080
  health_check_port     = 8080
  health_check_path     = "/healthz"
  stop_timeout_seconds  = 40
  labels                = local.labels

  env = merge(local.common_env, {
    SERVICE_NAME       = "api"
    TRUSTED_PROXY_HOPS = "2"
    DB_USER            = google_sql_user.app.name
    AUTH_JWKS_URL      = "https://${var.domains[0]}/auth/.well-known/jwks.json"
    SIGNED_URLS        = "true"
    PUBLIC_BASE_URL    = "https://${var.domains[0]}"
  })
  secret_env = {
    DB_PASSWORD        = local.secret_version["db_password_app"]
    WEBHOOK_SECRET_KEY = local.secret_version["webhook_secret_key"]
  }
}

module "transcoder" {
  source = "./modules/container_mig"

  name                  = "transcoder"
  region                = var.region
  image                 = local.images["transcoder"]
  service_account_email = google_service_account.runtime["transcoder"].email
  subnetwork            = google_compute_subnetwork.main.self_link
  machine_type          = var.transcoder_machine_type
  memory_limit_mb       = var.transcoder_memory_limit_mb
  disk_size_gb          = var.transcoder_disk_size_gb
  network_tags          = ["idrl-transcoder"]
  health_check_port     = 8081
  health_check_path     = "/healthz"
  process_probe         = "services.transcoder"
  stop_timeout_seconds  = var.transcoder_drain_seconds
  labels                = local.labels

  env = merge(local.common_env, {
    SERVICE_NAME            = "transcoder"
    DB_USER                 = "transcoder" # SELECT on tasks only (scripts/db_roles.py)
    SUBSCRIPTION_TRANSCODER = "video-tasks-transcoder"
    # Hand the message back before Docker's SIGKILL, with time left to say so.
    DRAIN_GRACE_SECONDS             = tostring(var.transcoder_drain_seconds - 20)
    TRANSCODER_ACK_DEADLINE_SECONDS = tostring(var.video_tasks_ack_deadline_seconds)
  })
  secret_env = {
    DB_PASSWORD = local.secret_version["db_password_transcoder"]
  }
}

# The webhook dispatcher: a fixed number of replicas sharing the deliveries table
# (docs/webhooks.md). It serves no port: the process probe answers the health check
# while the dispatcher process runs.
module "dispatcher" {
  source = "./modules/container_mig"

  name                  = "dispatcher"
  region                = var.region
  image                 = local.images["dispatcher"]
  service_account_email = google_service_account.runtime["dispatcher"].email
  subnetwork            = google_compute_subnetwork.main.self_link
  machine_type          = var.dispatcher_machine_type
  network_tags          = ["idrl-dispatcher"]
  health_check_port     = 8082
  health_check_path     = "/healthz"
  process_probe         = "services.dispatcher"
  # Attempts under way finish within the 10 s attempt timeout.
  stop_timeout_seconds = 30
  labels               = local.labels

  env = merge(local.common_env, {
    SERVICE_NAME = "dispatcher"
    DB_USER      = google_sql_user.app.name
  })
  secret_env = {
    DB_PASSWORD        = local.secret_version["db_password_app"]
    WEBHOOK_SECRET_KEY = local.secret_version["webhook_secret_key"]
  }
}

resource "google_compute_region_autoscaler" "dispatcher" {
  name   = "idrl-dispatcher"
  region = var.region
  target = module.dispatcher.instance_group_manager_id

  autoscaling_policy {
    min_replicas    = var.dispatcher_replicas
    max_replicas    = var.dispatcher_replicas
    cooldown_period = 60
  }
}

resource "google_compute_region_autoscaler" "http" {
  for_each = {
    auth = { group = module.auth.instance_group_manager_id, min = var.auth_min_replicas, max = var.auth_max_replicas }
    api  = { group = module.api.instance_group_manager_id, min = var.api_min_replicas, max = var.api_max_replicas }
  }

  name   = each.key
  region = var.region
  target = each.value.group

  autoscaling_policy {
    min_replicas    = each.value.min
    max_replicas    = each.value.max
    cooldown_period = 90
    mode            = "ON"

    load_balancing_utilization {
      target = var.http_target_utilization
    }

    cpu_utilization {
      target = 0.7
    }
  }
}

# One instance per transcoder_backlog_per_instance undelivered messages: the metric is the
# subscription's total backlog (a per-group metric), so single_instance_assignment says
# how much of it one instance is worth.
resource "google_compute_region_autoscaler" "transcoder" {
  name   = "transcoder"
  region = var.region
  target = module.transcoder.instance_group_manager_id

  autoscaling_policy {
    min_replicas    = var.transcoder_min_replicas
    max_replicas    = var.transcoder_max_replicas
    cooldown_period = 180 # boot, image pull, first message
    mode            = "ON"

    metric {
      name                       = "pubsub.googleapis.com/subscription/num_undelivered_messages"
      filter                     = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"video-tasks-transcoder\""
      single_instance_assignment = var.transcoder_backlog_per_instance
    }

    # Scale in one instance per 10 minutes at most: an instance being removed drains
    # (finishes or hands back its clip), and a brief dip in the backlog does not cut
    # capacity that the next burst needs.
    scale_in_control {
      time_window_sec = 600
      max_scaled_in_replicas {
        fixed = 1
      }
    }
  }
}
