output "instance_group" {
  description = "Instance group URL (a load balancer backend)."
  value       = google_compute_region_instance_group_manager.this.instance_group
}

output "instance_group_manager_id" {
  description = "Id of the managed instance group (the autoscaler's target)."
  value       = google_compute_region_instance_group_manager.this.id
}

output "instance_group_manager_name" {
  description = "Name of the managed instance group."
  value       = google_compute_region_instance_group_manager.this.name
}

output "instance_template" {
  description = "Self link of the template the group runs."
  value       = google_compute_instance_template.this.self_link_unique
}
