variable "name" {
  description = "Service name: names the template, the group, the container and the systemd unit."
  type        = string
}

variable "region" {
  description = "Region of the regional managed instance group."
  type        = string
}

variable "image" {
  description = "Container image to run, by commit tag (<registry>/<repo>/<service>:<sha>)."
  type        = string
}

variable "env" {
  description = "Plain environment variables of the container."
  type        = map(string)
  default     = {}
}

variable "secret_env" {
  description = "Environment variables read from Secret Manager at container start: name => secret version resource (projects/<p>/secrets/<s>/versions/latest)."
  type        = map(string)
  default     = {}
}

variable "service_account_email" {
  description = "Service account the instances (and so the container) run as."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork self link; instances get no external address."
  type        = string
}

variable "machine_type" {
  description = "Machine type of the instances."
  type        = string
}

variable "memory_limit_mb" {
  description = "Memory the container may use (docker --memory, swap included); the rest of the machine is left to the OS, Docker and the probe container. null: no limit."
  type        = number
  default     = null

  validation {
    condition     = var.memory_limit_mb == null ? true : var.memory_limit_mb >= 256
    error_message = "memory_limit_mb must be at least 256 (or null for no limit)."
  }
}

variable "disk_size_gb" {
  description = "Boot disk size."
  type        = number
  default     = 20
}

variable "network_tags" {
  description = "Network tags (the firewall rules target them)."
  type        = list(string)
}

variable "named_port" {
  description = "Port the container serves for the load balancer (named `http`); null for a worker that serves none."
  type        = number
  default     = null
}

variable "health_check_port" {
  description = "Port the autohealing health check probes."
  type        = number
}

variable "health_check_path" {
  description = "HTTP path the autohealing health check requests."
  type        = string
}

variable "autohealing_initial_delay_seconds" {
  description = "Time a new instance gets to boot and start its container before autohealing judges it."
  type        = number
  default     = 180
}

variable "stop_timeout_seconds" {
  description = "Seconds between SIGTERM and SIGKILL when the container is stopped (scale-in, rollout, autohealing)."
  type        = number
}

variable "process_probe" {
  description = "For a worker with no port: run a probe beside the container that answers on health_check_port whether a process whose command line contains this text is alive in it. null: no probe (the container serves its own health path)."
  type        = string
  default     = null
}

variable "max_surge" {
  description = "Extra instances a rolling update may create (new ones start before old ones stop)."
  type        = number
  default     = 3
}

variable "labels" {
  description = "Labels of the instances."
  type        = map(string)
  default     = {}
}
