# Global external Application Load Balancer: HTTPS only (HTTP answers with a redirect),
# /auth/* to the auth group, everything else to the api group.

resource "google_compute_global_address" "lb" {
  name = "idrl-lb"
}

resource "google_compute_health_check" "readiness" {
  for_each = toset(["auth", "api"])

  name                = "${each.key}-readiness"
  check_interval_sec  = 5
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 2

  # Readiness checks dependencies (database...): an instance that cannot serve is taken
  # out of rotation, but not recreated (autohealing asks /healthz).
  http_health_check {
    port         = 8080
    request_path = "/readyz"
  }

  log_config {
    enable = true
  }
}

resource "google_compute_backend_service" "services" {
  for_each = {
    auth = module.auth.instance_group
    api  = module.api.instance_group
  }

  name                            = each.key
  protocol                        = "HTTP"
  port_name                       = "http"
  load_balancing_scheme           = "EXTERNAL_MANAGED"
  health_checks                   = [google_compute_health_check.readiness[each.key].id]
  connection_draining_timeout_sec = 30
  # Uploads of up to MAX_UPLOAD_BYTES stream through the api.
  timeout_sec = each.key == "api" ? 300 : 30

  backend {
    group           = each.value
    balancing_mode  = "UTILIZATION"
    max_utilization = 0.8
    capacity_scaler = 1
  }

  log_config {
    enable      = true
    sample_rate = 1
  }
}

resource "google_compute_url_map" "https" {
  name            = "idrl"
  default_service = google_compute_backend_service.services["api"].id

  host_rule {
    hosts        = ["*"]
    path_matcher = "services"
  }

  path_matcher {
    name            = "services"
    default_service = google_compute_backend_service.services["api"].id

    path_rule {
      paths   = ["/auth", "/auth/*"]
      service = google_compute_backend_service.services["auth"].id
    }
  }
}

resource "google_compute_managed_ssl_certificate" "lb" {
  name = "idrl-${substr(sha256(join(",", var.domains)), 0, 8)}"

  managed {
    domains = var.domains
  }

  lifecycle {
    create_before_destroy = true # a domain change swaps certificates without downtime
  }
}

resource "google_compute_ssl_policy" "modern" {
  name            = "idrl-modern"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_https_proxy" "lb" {
  name             = "idrl"
  url_map          = google_compute_url_map.https.id
  ssl_certificates = [google_compute_managed_ssl_certificate.lb.id]
  ssl_policy       = google_compute_ssl_policy.modern.id
}

resource "google_compute_global_forwarding_rule" "https" {
  name                  = "idrl-https"
  ip_address            = google_compute_global_address.lb.id
  port_range            = "443"
  target                = google_compute_target_https_proxy.lb.id
  load_balancing_scheme = "EXTERNAL_MANAGED"
}

resource "google_compute_url_map" "http_redirect" {
  name = "idrl-http-redirect"

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
}

resource "google_compute_target_http_proxy" "redirect" {
  name    = "idrl-http-redirect"
  url_map = google_compute_url_map.http_redirect.id
}

resource "google_compute_global_forwarding_rule" "http_redirect" {
  # checkov:skip=CKV2_GCP_38:Port 80 serves only a redirect to HTTPS (url map idrl-http-redirect has no backend), so no request or token crosses it in clear.
  name                  = "idrl-http-redirect"
  ip_address            = google_compute_global_address.lb.id
  port_range            = "80"
  target                = google_compute_target_http_proxy.redirect.id
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
