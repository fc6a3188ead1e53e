"""Infrastructure: Terraform for Google Cloud, and the local stack (`infra.local`)."""
