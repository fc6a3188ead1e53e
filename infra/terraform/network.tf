resource "google_compute_network" "main" {
  name                    = "idrl"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "main" {
  name                     = "idrl-${var.region}"
  network                  = google_compute_network.main.id
  region                   = var.region
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true # VMs have no external address and still reach Google APIs

  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Outbound internet for VMs without external addresses: the transcoder fetches source URLs.
resource "google_compute_router" "main" {
  name    = "idrl-${var.region}"
  network = google_compute_network.main.id
  region  = var.region
}

resource "google_compute_router_nat" "main" {
  name                               = "idrl-${var.region}"
  router                             = google_compute_router.main.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Google's load balancer front ends and health checkers come from these ranges only;
# nothing else may open a connection to an instance.
locals {
  health_check_ranges = ["35.191.0.0/16", "130.211.0.0/22"]
}

resource "google_compute_firewall" "lb_to_http_services" {
  name          = "idrl-allow-lb-to-http-services"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  source_ranges = local.health_check_ranges
  target_tags   = ["idrl-http"]

  allow {
    protocol = "tcp"
    ports    = ["8080"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "health_checks_to_transcoder" {
  name          = "idrl-allow-health-checks-to-transcoder"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  source_ranges = local.health_check_ranges
  target_tags   = ["idrl-transcoder"]

  allow {
    protocol = "tcp"
    ports    = ["8081"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "health_checks_to_dispatcher" {
  name          = "idrl-allow-health-checks-to-dispatcher"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  source_ranges = local.health_check_ranges
  target_tags   = ["idrl-dispatcher"]

  allow {
    protocol = "tcp"
    ports    = ["8082"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Explicit and logged, although the VPC denies ingress by default: anything not allowed
# above shows up in the firewall logs.
resource "google_compute_firewall" "deny_all_ingress" {
  name          = "idrl-deny-all-ingress"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  priority      = 65534
  source_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Private services access: Cloud SQL's private IP and the Cloud Build private pool live in
# Google's producer network, peered with this one.
resource "google_compute_global_address" "private_services" {
  name          = "idrl-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = var.private_services_prefix_length
  network       = google_compute_network.main.id
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.main.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
}

# The notifier function reaches Cloud SQL's private IP through this connector.
resource "google_vpc_access_connector" "main" {
  name          = "idrl-connector"
  region        = var.region
  network       = google_compute_network.main.name
  ip_cidr_range = var.vpc_connector_cidr
  min_instances = 2
  max_instances = 3
  machine_type  = "e2-micro"

  depends_on = [google_project_service.apis]
}
