# Global external Application Load Balancer: HTTPS only (HTTP answers with a redirect),
# /auth/* to the auth group, the api's paths to the api group, everything else to the web
# app's backend bucket (web.tf).

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
  timeout_sec     = each.key == "api" ? 300 : 30
  security_policy = google_compute_security_policy.edge.id
  # Every answer a backend gives leaves over HTTPS: port 80 only redirects (no backend),
  # so the load balancer adds HSTS to all of them and browsers never try HTTP again.
  custom_response_headers = ["Strict-Transport-Security: max-age=31536000; includeSubDomains"]

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
  default_service = google_compute_backend_bucket.web.id

  host_rule {
    hosts        = ["*"]
    path_matcher = "services"
  }

  path_matcher {
    name            = "services"
    default_service = google_compute_backend_bucket.web.id

    # Readiness is for the health checks, which ask each instance directly on port 8080;
    # from the internet /readyz would only tell the state of the dependencies and make
    # every answer a database and a storage round trip. The load balancer answers it 404
    # itself (an abort for every request of the route), the api never sees it.
    route_rules {
      priority = 1
      service  = google_compute_backend_service.services["api"].id
      match_rules {
        full_path_match = "/readyz"
      }
      route_action {
        fault_injection_policy {
          abort {
            http_status = 404
            percentage  = 100
          }
        }
      }
    }

    route_rules {
      priority = 2
      service  = google_compute_backend_service.services["auth"].id
      match_rules {
        full_path_match = "/auth"
      }
      match_rules {
        prefix_match = "/auth/"
      }
    }

    # The api's paths (the OpenAPI document lists them; /uploads is the tus endpoint).
    route_rules {
      priority = 3
      service  = google_compute_backend_service.services["api"].id
      match_rules {
        prefix_match = "/tasks"
      }
      match_rules {
        prefix_match = "/uploads"
      }
      match_rules {
        full_path_match = "/openapi.json"
      }
      match_rules {
        full_path_match = "/healthz"
      }
    }

    # The web app's page: / is its index.html, asked for again on every load.
    route_rules {
      priority = 4
      service  = google_compute_backend_bucket.web.id
      match_rules {
        full_path_match = "/"
      }
      match_rules {
        full_path_match = "/index.html"
      }
      route_action {
        url_rewrite {
          path_prefix_rewrite = "/index.html"
        }
      }
      header_action {
        response_headers_to_add {
          header_name  = "Cache-Control"
          header_value = local.web_cache.page
          replace      = true
        }
      }
    }

    # Its hashed assets: kept for a year.
    route_rules {
      priority = 5
      service  = google_compute_backend_bucket.web.id
      match_rules {
        prefix_match = "/assets/"
      }
      header_action {
        response_headers_to_add {
          header_name  = "Cache-Control"
          header_value = local.web_cache.assets
          replace      = true
        }
      }
    }
  }
}

# --- Cloud Armor -----------------------------------------------------------------------

# On both backend services. Rules are evaluated by priority, the first match wins.
resource "google_compute_security_policy" "edge" {
  name        = "idrl-edge"
  description = "Per-client rate limit and preconfigured WAF rules in front of auth and api."

  # The URL map's /readyz route matches the path as sent; the api decodes it, so
  # /ready%7A or //readyz would still reach /readyz. Refused here in those spellings too.
  rule {
    priority    = 50
    action      = "deny(404)"
    description = "Readiness is for the health checks only"
    match {
      expr {
        expression = "request.path.urlDecode().matches('^/+readyz/*$')"
      }
    }
  }

  # Log4j lookups (CVE-2021-44228 and its variants): refused everywhere.
  rule {
    priority    = 100
    action      = "deny(403)"
    description = "Log4j JNDI lookups"
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('cve-canary')"
      }
    }
  }

  # One client (its address as Google's front end sees it) past the limit gets 429 until
  # its rate falls back under it. The services' own limits (per user, per account) stay
  # the finer ones; this one stops a flood before it costs an instance anything.
  rule {
    priority    = 200
    action      = "throttle"
    description = "Per-client request rate"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.armor_requests_per_minute
        interval_sec = 60
      }
    }
  }

  # Preconfigured WAF rules at sensitivity 1 (the fewest false positives), on everything
  # but the submission route: POST /tasks carries either a video (multipart: binary bytes
  # that match SQL and script signatures by chance) or a JSON source URL (which the
  # remote-file-inclusion rules exist to refuse). The api checks those bodies itself:
  # content sniffing and probing for files, shared.urlpolicy for URLs (docs/security.md).
  dynamic "rule" {
    for_each = {
      300 = "sqli-v33-stable"
      310 = "xss-v33-stable"
      320 = "lfi-v33-stable"
      330 = "rce-v33-stable"
      340 = "scannerdetection-v33-stable"
      350 = "protocolattack-v33-stable"
      360 = "sessionfixation-v33-stable"
    }
    content {
      priority    = rule.key
      action      = "deny(403)"
      description = "Preconfigured WAF ${rule.value}, submissions excluded"
      match {
        expr {
          expression = "evaluatePreconfiguredWaf('${rule.value}', {'sensitivity': 1}) && !(request.method == 'POST' && request.path == '/tasks')"
        }
      }
    }
  }

  rule {
    priority    = 2147483647
    action      = "allow"
    description = "Everything else"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
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
