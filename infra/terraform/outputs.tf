output "load_balancer_ip" {
  description = "Address of the load balancer: point the DNS A records of var.domains here."
  value       = google_compute_global_address.lb.address
}

output "base_url" {
  description = "Public base URL of the platform."
  value       = "https://${var.domains[0]}"
}

output "web_bucket" {
  description = "Bucket the web app's build is published to (cloudbuild.yaml, step web-publish)."
  value       = google_storage_bucket.web.name
}

output "images" {
  description = "Image each service runs (this apply's image_tag)."
  value       = local.images
}

output "artifact_registry" {
  description = "Docker repository the pipeline pushes to (<region>-docker.pkg.dev/<project>/<repository>)."
  value       = local.image_base
}

output "sql_instance_connection_name" {
  description = "Cloud SQL instance connection name (INSTANCE_CONNECTION_NAME)."
  value       = google_sql_database_instance.main.connection_name
}

output "sql_private_ip" {
  description = "Private address of the Cloud SQL instance."
  value       = google_sql_database_instance.main.private_ip_address
}

output "buckets" {
  description = "Bucket names: uploads, clips, access logs, function source."
  value = {
    uploads         = google_storage_bucket.uploads.name
    clips           = google_storage_bucket.clips.name
    access_logs     = google_storage_bucket.access_logs.name
    function_source = google_storage_bucket.function_source.name
  }
}

output "topics" {
  description = "Pub/Sub topics and their dead-letter topics."
  value = {
    video_tasks             = module.video_tasks.topic_name
    video_tasks_dead_letter = module.video_tasks.dead_letter_topic_name
    task_events             = module.task_events.topic_name
    task_events_dead_letter = module.task_events.dead_letter_topic_name
  }
}

output "service_accounts" {
  description = "Service account e-mail of each service, the notifier's trigger and the deployer."
  value = merge(
    { for name, account in google_service_account.runtime : name => account.email },
    {
      notifier_trigger = google_service_account.notifier_trigger.email
      deployer         = google_service_account.deployer.email
    },
  )
}

output "secrets" {
  description = "Secret Manager secret ids (the token signing key's version is added by hand, docs/deploy.md)."
  value       = { for key, secret in google_secret_manager_secret.secrets : key => secret.secret_id }
}

output "instance_groups" {
  description = "Managed instance group name of each VM service."
  value = {
    auth       = module.auth.instance_group_manager_name
    api        = module.api.instance_group_manager_name
    transcoder = module.transcoder.instance_group_manager_name
  }
}

output "notifier_function" {
  description = "Name of the notifier Cloud Function."
  value       = google_cloudfunctions2_function.notifier.name
}

output "worker_pool" {
  description = "Cloud Build private pool the pipeline runs in (cloudbuild.yaml's _POOL)."
  value       = google_cloudbuild_worker_pool.ci.id
}
