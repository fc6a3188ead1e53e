variable "topic" {
  description = "Name of the topic (its dead-letter topic is <topic>-dead-letter)."
  type        = string
}

variable "subscriptions" {
  description = "Pull subscriptions on the topic: name => ack deadline in seconds."
  type        = map(number)
}

variable "max_delivery_attempts" {
  description = "Deliveries of a message before it is moved to the dead-letter topic (5-100)."
  type        = number
}

variable "minimum_backoff_seconds" {
  description = "First redelivery delay after a nack or an expired deadline; doubles up to maximum_backoff_seconds."
  type        = number
  default     = 10
}

variable "maximum_backoff_seconds" {
  description = "Longest redelivery delay (at most 600)."
  type        = number
  default     = 600
}

variable "kms_key_name" {
  description = "KMS key that encrypts the topics' messages."
  type        = string
}

variable "pubsub_service_agent" {
  description = "IAM member of the project's Pub/Sub service agent, which moves messages to the dead-letter topic."
  type        = string
}

variable "labels" {
  description = "Labels put on every resource."
  type        = map(string)
  default     = {}
}
