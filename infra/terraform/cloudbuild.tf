# The pipeline (cloudbuild.yaml) runs as its own service account, in a private worker pool
# peered with the VPC so it can migrate the database over Cloud SQL's private IP.

resource "google_service_account" "deployer" {
  account_id   = "idrl-deployer"
  display_name = "idrl deployer: Cloud Build pipeline (test, build, push, migrate, terraform apply)"
}

# The pipeline's last step is `terraform apply`, so this account can change what this
# configuration manages: the admin role of each kind of resource in it, and no basic role
# (owner, editor). Only the Cloud Build trigger on the main branch, with approval
# (docs/deploy.md), runs as it.
resource "google_project_iam_member" "deployer" {
  # checkov:skip=CKV_GCP_49:The pipeline's terraform apply creates and manages the platform's service accounts (iam.tf); it impersonates only the six accounts granted below, not every account.
  for_each = toset([
    "roles/artifactregistry.admin",
    "roles/cloudbuild.workerPoolUser",
    "roles/cloudfunctions.admin",
    "roles/cloudkms.admin",
    "roles/cloudsql.admin",
    "roles/compute.admin",
    "roles/eventarc.admin",
    "roles/iam.roleAdmin",
    "roles/iam.serviceAccountAdmin",
    "roles/logging.configWriter",
    "roles/logging.logWriter",
    "roles/monitoring.admin",
    "roles/pubsub.admin",
    "roles/resourcemanager.projectIamAdmin",
    "roles/run.admin",
    "roles/secretmanager.admin",
    "roles/servicenetworking.networksAdmin",
    "roles/serviceusage.serviceUsageAdmin",
    "roles/storage.admin",
    "roles/vpcaccess.admin",
  ])

  project = var.project_id
  role    = each.value
  member  = google_service_account.deployer.member
}

# actAs on exactly the accounts the pipeline attaches: the four runtime accounts (instance
# templates, the function), the trigger's, and its own (it builds the function's source).
resource "google_service_account_iam_member" "deployer_acts_as" {
  for_each = merge(
    { for name, account in google_service_account.runtime : name => account.name },
    {
      notifier_trigger = google_service_account.notifier_trigger.name
      deployer         = google_service_account.deployer.name
    },
  )

  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.deployer.member
}

resource "google_cloudbuild_worker_pool" "ci" {
  # checkov:skip=CKV_GCP_86:The workers need public egress (PyPI, Debian, Docker Hub for the test containers); Cloud NAT cannot serve a pool in Google's peered producer network. Ingress stays closed: the pool accepts no connections.
  name     = "idrl-ci"
  location = var.region

  worker_config {
    machine_type = "e2-highcpu-8"
    disk_size_gb = 100
    # Tests and builds fetch packages from PyPI, Debian and Docker Hub.
    no_external_ip = false
  }

  network_config {
    peered_network          = google_compute_network.main.id
    peered_network_ip_range = "/${var.private_services_prefix_length + 4}"
  }

  depends_on = [google_service_networking_connection.private_services]
}
