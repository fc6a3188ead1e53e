# Every input of the platform. docs/terraform.md lists them with their defaults.

variable "project_id" {
  description = "Google Cloud project that holds the whole platform."
  type        = string
}

variable "region" {
  description = "Region for the network, Cloud SQL, the instance groups, Pub/Sub storage, the function and Artifact Registry."
  type        = string
  default     = "us-central1"
}

variable "name_prefix" {
  description = "Prefix of bucket names (bucket names are global): buckets are <prefix>-uploads, <prefix>-clips..."
  type        = string
}

variable "domains" {
  description = "Host names served by the load balancer (Google-managed certificate). Their DNS A records must point at the `load_balancer_ip` output; `<ip>.nip.io` works for a first deployment."
  type        = list(string)

  validation {
    condition     = length(var.domains) > 0
    error_message = "At least one domain is needed: the load balancer only serves HTTPS (HTTP redirects to it)."
  }
}

variable "image_tag" {
  description = "Tag of the four images in Artifact Registry to run (Cloud Build passes the commit SHA). Changing it rolls out new instance templates."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{7,40}$", var.image_tag))
    error_message = "image_tag is a commit SHA: mutable tags such as `latest` would make rollouts and rollbacks unreproducible."
  }
}

variable "artifact_repository" {
  description = "Artifact Registry Docker repository that holds the images."
  type        = string
  default     = "idrl"
}

variable "alert_emails" {
  description = "E-mail addresses notified by every alert policy."
  type        = list(string)
  default     = []
}

# --- network -----------------------------------------------------------------------------

variable "subnet_cidr" {
  description = "Primary range of the platform's subnet (VMs of the three instance groups)."
  type        = string
  default     = "10.10.0.0/20"
}

variable "vpc_connector_cidr" {
  description = "/28 range of the Serverless VPC Access connector the notifier function reaches Cloud SQL through."
  type        = string
  default     = "10.10.16.0/28"
}

variable "private_services_prefix_length" {
  description = "Prefix length of the range reserved for private services access (Cloud SQL private IP, the Cloud Build private pool)."
  type        = number
  default     = 20
}

# --- database ----------------------------------------------------------------------------

variable "db_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-custom-2-7680"
}

variable "db_availability_type" {
  description = "REGIONAL (high availability, a standby in another zone) or ZONAL."
  type        = string
  default     = "REGIONAL"

  validation {
    condition     = contains(["REGIONAL", "ZONAL"], var.db_availability_type)
    error_message = "db_availability_type is REGIONAL or ZONAL."
  }
}

variable "db_disk_size_gb" {
  description = "Initial Cloud SQL disk size in GB (it grows automatically)."
  type        = number
  default     = 20
}

variable "db_backup_retention_days" {
  description = "Automated backups kept (daily)."
  type        = number
  default     = 14
}

variable "db_log_retention_days" {
  description = "Days of write-ahead log kept for point-in-time recovery (1-7)."
  type        = number
  default     = 7
}

variable "db_deletion_protection" {
  description = "Refuse to destroy the Cloud SQL instance (set false only to tear an environment down)."
  type        = bool
  default     = true
}

# --- buckets -----------------------------------------------------------------------------

variable "uploads_retention_days" {
  description = "Originals in the uploads bucket are deleted this many days after upload (the clips are what is kept)."
  type        = number
  default     = 30
}

variable "clips_noncurrent_retention_days" {
  description = "Overwritten or deleted clips (noncurrent versions) are kept this many days, then deleted."
  type        = number
  default     = 7
}

# --- instance groups ---------------------------------------------------------------------

variable "http_machine_type" {
  description = "Machine type of the api and auth instances."
  type        = string
  default     = "e2-small"
}

variable "api_min_replicas" {
  description = "Fewest api instances."
  type        = number
  default     = 2
}

variable "api_max_replicas" {
  description = "Most api instances."
  type        = number
  default     = 6
}

variable "auth_min_replicas" {
  description = "Fewest auth instances."
  type        = number
  default     = 2
}

variable "auth_max_replicas" {
  description = "Most auth instances."
  type        = number
  default     = 4
}

variable "token_previous_public_keys" {
  description = "Ed25519 public keys (PEM blocks, one after another) of earlier token signing keys: auth publishes them in its JWKS beside the current key so the tokens they signed keep verifying through a key rotation (docs/deploy.md). Public halves only; empty outside a rotation."
  type        = string
  default     = ""

  validation {
    # The value lands in the instance template's metadata and the state: never a private key.
    condition     = !strcontains(var.token_previous_public_keys, "PRIVATE")
    error_message = "token_previous_public_keys takes public keys only: python -m shared.tokens public-key <private-pem-path> prints a key's public half."
  }
}

variable "http_target_utilization" {
  description = "Load balancing utilization (0-1) the api and auth autoscalers keep each instance at."
  type        = number
  default     = 0.6
}

variable "transcoder_machine_type" {
  description = "Machine type of the transcoder instances (ffmpeg is CPU-bound)."
  type        = string
  default     = "c2d-standard-4"
}

variable "transcoder_memory_limit_mb" {
  description = "Memory limit of the transcoder container. The default fits c2d-standard-4 (16 GiB): 14 GiB for the worker and its ffmpeg runs (two at a time, each capped by FFMPEG_MEMORY_LIMIT_BYTES), 2 GiB left to Container-Optimized OS, Docker and the probe container. Change it with transcoder_machine_type."
  type        = number
  default     = 14336
}

variable "transcoder_disk_size_gb" {
  description = "Boot disk of a transcoder instance: holds the source and the clips while a task runs."
  type        = number
  default     = 50
}

variable "transcoder_min_replicas" {
  description = "Fewest transcoder instances (0 lets the group scale to zero when the queue is empty)."
  type        = number
  default     = 1
}

variable "transcoder_max_replicas" {
  description = "Most transcoder instances."
  type        = number
  default     = 8
}

variable "transcoder_backlog_per_instance" {
  description = "Undelivered messages on video-tasks-transcoder (being made or waiting) per instance; the autoscaler runs backlog / this many instances. A message is a let-out unit: a part, a task to plan, or a task made whole; the fair share holds the rest in the database. 4 is each of an instance's two slots busy with one more unit waiting (docs/deploy.md, Scaling)."
  type        = number
  default     = 4
}

variable "transcoder_drain_seconds" {
  description = "Time a transcoder gets after SIGTERM to finish or hand back its message before the container is killed (the worker's DRAIN_GRACE_SECONDS is set below it)."
  type        = number
  default     = 90
}

# --- Pub/Sub -----------------------------------------------------------------------------

variable "video_tasks_ack_deadline_seconds" {
  description = "Ack deadline of video-tasks-transcoder. The worker extends its lease while ffmpeg runs; this bounds how soon a dead worker's message is redelivered."
  type        = number
  default     = 300
}

variable "task_events_ack_deadline_seconds" {
  description = "Ack deadline of task-events-notifier (one row update per message)."
  type        = number
  default     = 30
}

variable "max_delivery_attempts" {
  description = "Deliveries of one message before Pub/Sub moves it to the dead-letter topic (above the workers' own MAX_ATTEMPTS, so dead-lettering is the last resort)."
  type        = number
  default     = 10
}

variable "notifier_pull_subscription" {
  description = "Also create the pull subscription task-events-notifier, for running the notifier's pull runner image instead of (or beside) the function."
  type        = bool
  default     = false
}

# --- load balancer ------------------------------------------------------------------------

variable "armor_requests_per_minute" {
  description = "Requests one client address may send through the load balancer each minute before Cloud Armor answers 429 (the Cloud Armor policy idrl-edge)."
  type        = number
  default     = 600
}

# --- alerts ------------------------------------------------------------------------------

variable "oldest_unacked_alert_seconds" {
  description = "Alert when the oldest unacknowledged message on video-tasks-transcoder is older than this."
  type        = number
  default     = 1800
}

variable "instance_group_size_alert" {
  description = "Alert when an instance group has more instances than this within an hour (the original system's policy: 4)."
  type        = number
  default     = 4
}

variable "dispatcher_machine_type" {
  description = "Machine type of the webhook dispatcher instances."
  type        = string
  default     = "e2-small"
}

variable "dispatcher_replicas" {
  description = "Webhook dispatcher instances (each sends up to DISPATCHER_CONCURRENCY deliveries at once)."
  type        = number
  default     = 2
}

variable "webhook_backlog_alert_seconds" {
  description = "Alert when the oldest pending webhook delivery of an enabled endpoint is older than this."
  type        = number
  default     = 900
}

variable "webhook_failures_alert_count" {
  description = "Alert when more webhook deliveries than this fail for good within 15 minutes."
  type        = number
  default     = 10
}
