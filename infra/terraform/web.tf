# The web app (web/, built by `make web`): its files in a private bucket of their own,
# served by a backend bucket behind the same load balancer as auth and api, so the app
# and the API share one origin (no CORS, no token in a URL). The url map sends the API's
# paths to the services and everything else here (loadbalancer.tf).

locals {
  # The same policy the local gateway sends (infra/local/gateway.py, WEB_CSP): this
  # origin only, no inline script or style, no framing.
  web_csp = join("; ", [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ])
  # Asset names carry a hash of their content: a new build has new names, so an asset
  # is kept for a year; the page itself is asked for again every time.
  web_cache = {
    page   = "no-cache"
    assets = "public, max-age=31536000, immutable"
  }
  # Cloud CDN's fill account reads the private bucket for the load balancer.
  web_reader = "serviceAccount:service-${data.google_project.this.number}@cloud-cdn-fill.iam.gserviceaccount.com"
}

resource "google_storage_bucket" "web" {
  name                        = "${var.name_prefix}-web"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  encryption {
    default_kms_key_name = google_kms_crypto_key.keys["storage"].id
  }

  # A build replaced by mistake can be put back; old builds go after a month.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
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

resource "google_storage_bucket_iam_member" "web_reader" {
  bucket = google_storage_bucket.web.name
  role   = "roles/storage.objectViewer"
  member = local.web_reader
}

resource "google_compute_backend_bucket" "web" {
  name        = "idrl-web"
  description = "The web app's built files (web/dist)."
  bucket_name = google_storage_bucket.web.name
  # A private bucket is reachable from the load balancer only through Cloud CDN's fill
  # account; the cache follows the objects' own Cache-Control, set when they are published.
  enable_cdn       = true
  compression_mode = "AUTOMATIC"

  cdn_policy {
    cache_mode = "USE_ORIGIN_HEADERS"
  }

  custom_response_headers = [
    "Content-Security-Policy: ${local.web_csp}",
    "X-Content-Type-Options: nosniff",
    "X-Frame-Options: DENY",
    "Referrer-Policy: same-origin",
    "Strict-Transport-Security: max-age=31536000; includeSubDomains",
  ]
}
