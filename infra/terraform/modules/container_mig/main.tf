# A container on Container-Optimized OS, run by a systemd unit that cloud-init writes,
# in a regional managed instance group with autohealing and rolling updates.
#
# A new image means a new instance template (the image is part of it) and a proactive
# rolling update of the group: new instances start, pass their health check, and only
# then are old ones stopped, each getting stop_timeout_seconds after SIGTERM.

data "google_compute_image" "cos" {
  family  = "cos-stable"
  project = "cos-cloud"
}

locals {
  registry   = split("/", var.image)[0]
  unit       = "idrl-${var.name}"
  env_file   = join("", [for key in sort(keys(var.env)) : "${key}=${var.env[key]}\n"])
  secret_env = join(" ", [for key in sort(keys(var.secret_env)) : "${key}=${var.secret_env[key]}"])
  # Swap equal to memory: the container gets no swap beyond its limit. Past the limit the
  # kernel kills a process inside the container, never one of the machine's own.
  memory_flags = var.memory_limit_mb == null ? "" : "--memory ${var.memory_limit_mb}m --memory-swap ${var.memory_limit_mb}m "

  # Written into /run (tmpfs): secret values never touch the disk.
  fetch_secrets = length(var.secret_env) == 0 ? "/bin/true" : join(" ", [
    "/bin/bash -c 'umask 077 && /usr/bin/docker run --rm --network host",
    "-v /etc/idrl/secrets_env.py:/opt/idrl/secrets_env.py:ro --entrypoint python",
    "${var.image} /opt/idrl/secrets_env.py ${local.secret_env} > /run/idrl/${var.name}.secrets.env'",
  ])

  service_unit = <<-UNIT
    [Unit]
    Description=idrl ${var.name} container
    Wants=network-online.target gcr-online.target docker.socket
    After=network-online.target gcr-online.target docker.socket

    [Service]
    Environment=HOME=/home/idrl
    ExecStartPre=/bin/mkdir -p /home/idrl /run/idrl
    ExecStartPre=/usr/bin/docker-credential-gcr configure-docker --registries ${local.registry}
    ExecStartPre=/usr/bin/docker pull ${var.image}
    ExecStartPre=${local.fetch_secrets}
    ExecStartPre=-/usr/bin/docker rm --force ${var.name}
    ExecStart=/usr/bin/docker run --rm --name ${var.name} --network host --env-file /etc/idrl/${var.name}.env ${length(var.secret_env) == 0 ? "" : "--env-file /run/idrl/${var.name}.secrets.env "}${local.memory_flags}--stop-timeout ${var.stop_timeout_seconds} ${var.image}
    ExecStop=/usr/bin/docker stop --time ${var.stop_timeout_seconds} ${var.name}
    TimeoutStopSec=${var.stop_timeout_seconds + 15}
    Restart=always
    RestartSec=5

    [Install]
    WantedBy=multi-user.target
  UNIT

  probe_unit = <<-UNIT
    [Unit]
    Description=idrl ${var.name} process probe on port ${var.health_check_port}
    After=${local.unit}.service
    BindsTo=${local.unit}.service

    [Service]
    Environment=HOME=/home/idrl
    ExecStartPre=-/usr/bin/docker rm --force ${var.name}-probe
    ExecStart=/usr/bin/docker run --rm --name ${var.name}-probe --network host --pid container:${var.name} -v /etc/idrl/process_probe.py:/opt/idrl/process_probe.py:ro --entrypoint python ${var.image} /opt/idrl/process_probe.py ${var.health_check_port} ${var.process_probe == null ? "" : var.process_probe}
    ExecStop=/usr/bin/docker stop --time 5 ${var.name}-probe
    Restart=always
    RestartSec=5

    [Install]
    WantedBy=multi-user.target
  UNIT

  files = concat(
    [
      { path = "/etc/idrl/${var.name}.env", permissions = "0644", owner = "root", content = local.env_file },
      { path = "/etc/idrl/secrets_env.py", permissions = "0644", owner = "root", content = file("${path.module}/secrets_env.py") },
      { path = "/etc/systemd/system/${local.unit}.service", permissions = "0644", owner = "root", content = local.service_unit },
    ],
    var.process_probe == null ? [] : [
      { path = "/etc/idrl/process_probe.py", permissions = "0644", owner = "root", content = file("${path.module}/process_probe.py") },
      { path = "/etc/systemd/system/${local.unit}-probe.service", permissions = "0644", owner = "root", content = local.probe_unit },
    ],
  )

  units = concat([local.unit], var.process_probe == null ? [] : ["${local.unit}-probe"])

  cloud_config = "#cloud-config\n${yamlencode({
    write_files = local.files
    runcmd = concat(
      [["systemctl", "daemon-reload"]],
      [for unit in local.units : ["systemctl", "start", "${unit}.service"]],
    )
  })}"
}

resource "google_compute_instance_template" "this" {
  name_prefix  = "${var.name}-"
  description  = "idrl ${var.name}: ${var.image}"
  machine_type = var.machine_type
  tags         = var.network_tags
  labels       = merge(var.labels, { service = var.name })

  can_ip_forward = false

  disk {
    source_image = data.google_compute_image.cos.self_link
    disk_type    = "pd-balanced"
    disk_size_gb = var.disk_size_gb
    boot         = true
    auto_delete  = true
  }

  network_interface {
    subnetwork = var.subnetwork
    # No access_config: no external address. Egress goes through Cloud NAT.
  }

  service_account {
    email  = var.service_account_email
    scopes = ["cloud-platform"] # what the account may do is decided by its IAM roles
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    user-data                 = local.cloud_config
    google-logging-enabled    = "true"
    google-monitoring-enabled = "true"
    block-project-ssh-keys    = "true"
    enable-oslogin            = "TRUE"
    serial-port-enable        = "FALSE"
    cos-update-strategy       = "update_disabled" # the image is replaced by rollouts, not in place
  }

  scheduling {
    automatic_restart   = true
    on_host_maintenance = "MIGRATE"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_health_check" "this" {
  name                = "${var.name}-autohealing"
  check_interval_sec  = 10
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 3 # 30 s of failures before an instance is recreated

  http_health_check {
    port         = var.health_check_port
    request_path = var.health_check_path
  }

  log_config {
    enable = true
  }
}

resource "google_compute_region_instance_group_manager" "this" {
  name               = var.name
  region             = var.region
  base_instance_name = var.name

  version {
    name              = "primary"
    instance_template = google_compute_instance_template.this.self_link_unique
  }

  dynamic "named_port" {
    for_each = var.named_port == null ? [] : [var.named_port]
    content {
      name = "http"
      port = named_port.value
    }
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.this.id
    initial_delay_sec = var.autohealing_initial_delay_seconds
  }

  update_policy {
    type                           = "PROACTIVE"
    minimal_action                 = "REPLACE"
    most_disruptive_allowed_action = "REPLACE"
    replacement_method             = "SUBSTITUTE"
    instance_redistribution_type   = "PROACTIVE"
    max_surge_fixed                = var.max_surge
    max_unavailable_fixed          = 0
  }

  instance_lifecycle_policy {
    default_action_on_failure = "REPAIR"
    force_update_on_repair    = "YES"
  }

  # Terraform waits for the rollout: the pipeline fails if new instances never get healthy.
  wait_for_instances        = true
  wait_for_instances_status = "UPDATED"

  lifecycle {
    # The autoscaler owns the size.
    ignore_changes = [target_size]
  }

  timeouts {
    create = "30m"
    update = "30m"
  }
}
