"""The Terraform configuration holds the resources the design names, with the properties
that matter (parsed with python-hcl2: no provider, no cloud)."""

from __future__ import annotations

import re

import pytest

from shared.config import Settings
from tests.support.infra import REPO, TERRAFORM, load_tf, only, parse_dir

TF_FILES = sorted(TERRAFORM.rglob("*.tf"))
HEALTH_CHECK_RANGES = {"35.191.0.0/16", "130.211.0.0/22"}


@pytest.mark.parametrize("path", TF_FILES, ids=lambda path: str(path.relative_to(TERRAFORM)))
def test_every_tf_file_parses(path):
    assert load_tf(path), f"{path} is empty"


@pytest.mark.parametrize(
    "directory",
    sorted({path.parent for path in TF_FILES}),
    ids=lambda path: str(path.relative_to(TERRAFORM)) or "root",
)
def test_every_variable_and_output_is_documented(directory):
    parsed = parse_dir(directory)
    assert parsed.variables or parsed.outputs
    for kind, blocks in (("variable", parsed.variables), ("output", parsed.outputs)):
        for name, body in blocks.items():
            assert len(str(body.get("description", ""))) >= 15, f"{kind} {name} lacks a description"
        if kind == "variable":
            for name, body in blocks.items():
                assert "type" in body, f"variable {name} has no type"


def test_variables_are_listed_in_the_terraform_doc(root):
    doc = (REPO / "docs" / "terraform.md").read_text()
    for name in list(root.variables) + list(root.outputs):
        assert f"`{name}`" in doc, f"docs/terraform.md does not mention {name}"


# --- network ------------------------------------------------------------------------------


def test_vpc_subnet_and_nat(root):
    network = root.resource("google_compute_network", "main")
    assert network["auto_create_subnetworks"] is False
    subnet = root.resource("google_compute_subnetwork", "main")
    assert subnet["private_ip_google_access"] is True
    assert subnet["log_config"], "VPC flow logs"
    nat = root.resource("google_compute_router_nat", "main")
    assert nat["router"] == "${google_compute_router.main.name}"


def test_firewall_allows_only_the_load_balancer_health_check_ranges(root):
    firewalls = root.of_type("google_compute_firewall")
    allows = {name: rule for name, rule in firewalls.items() if "allow" in rule}
    assert allows
    assert set(root.locals["health_check_ranges"]) == HEALTH_CHECK_RANGES
    for name, rule in allows.items():
        assert rule["direction"] == "INGRESS"
        assert rule["source_ranges"] == "${local.health_check_ranges}", name
        assert rule.get("target_tags"), f"{name} applies to every instance"
        for allow in rule["allow"]:
            assert allow["protocol"] == "tcp" and allow.get("ports"), name
    for name, rule in firewalls.items():
        if "deny" in rule:
            assert rule["priority"] > 65000, f"{name} would shadow the allow rules"


# --- Cloud SQL ------------------------------------------------------------------------------


def test_cloud_sql_is_postgres_15_private_with_backups_and_pitr(root):
    instance = root.resource("google_sql_database_instance", "main")
    assert instance["database_version"] == "POSTGRES_15"
    settings = only(instance["settings"])
    ip = only(settings["ip_configuration"])
    assert ip["ipv4_enabled"] is False
    assert ip["private_network"] == "${google_compute_network.main.id}"
    assert ip["ssl_mode"] in {"ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"}
    backup = only(settings["backup_configuration"])
    assert backup["enabled"] is True
    assert backup["point_in_time_recovery_enabled"] is True
    assert (
        root.resource("google_sql_database", "app")["instance"] == "${google_sql_database_instance.main.name}"
    )
    assert root.resource("google_sql_user", "app")["password"] == "${random_password.db_app.result}"


def test_database_passwords_and_signing_key_live_in_secret_manager(root):
    secret_ids = set(root.locals["secrets"].values())
    assert {"db-password-app", "db-password-transcoder", "token-signing-key"} <= secret_ids
    versions = root.of_type("google_secret_manager_secret_version")
    assert versions["db_password_app"]["secret_data"] == "${random_password.db_app.result}"
    assert versions["db_password_transcoder"]["secret_data"] == "${random_password.db_transcoder.result}"
    # The signing key is added by hand so that it never enters the Terraform state.
    assert not any("token_signing_key" in str(version) for version in versions.values())


# --- buckets -----------------------------------------------------------------------------


def test_every_bucket_is_private_and_uniform(root):
    buckets = root.of_type("google_storage_bucket")
    assert {"uploads", "clips"} <= set(buckets)
    for name, bucket in buckets.items():
        assert bucket["uniform_bucket_level_access"] is True, name
        assert bucket["public_access_prevention"] == "enforced", name
        assert bucket.get("encryption"), f"{name} has no customer-managed key"


def test_uploads_expire_and_clips_are_versioned(root):
    uploads = root.resource("google_storage_bucket", "uploads")
    deletes = [rule for rule in uploads["lifecycle_rule"] if only(rule["action"])["type"] == "Delete"]
    assert [only(rule["condition"]).get("age") for rule in deletes] == ["${var.uploads_retention_days}"]
    clips = root.resource("google_storage_bucket", "clips")
    assert only(clips["versioning"])["enabled"] is True
    noncurrent = [only(rule["condition"]) for rule in clips["lifecycle_rule"]]
    assert any("days_since_noncurrent_time" in condition for condition in noncurrent)


# --- Pub/Sub -----------------------------------------------------------------------------


def test_topics_and_their_subscriptions(root):
    assert root.locals["topics"] == {"video_tasks": "video-tasks", "task_events": "task-events"}
    video = root.modules["video_tasks"]
    assert video["source"] == "./modules/pubsub_queue"
    assert video["topic"] == "${local.topics.video_tasks}"
    assert set(video["subscriptions"]) == {"video-tasks-transcoder"}
    events = root.modules["task_events"]
    assert events["topic"] == "${local.topics.task_events}"
    assert '"task-events-notifier"' in events["subscriptions"]
    # The transcoder's deadline is sized to clip work, well above a row update's.
    defaults = {
        name: root.variables[name]["default"]
        for name in ("video_tasks_ack_deadline_seconds", "task_events_ack_deadline_seconds")
    }
    assert defaults["video_tasks_ack_deadline_seconds"] >= 120
    assert defaults["video_tasks_ack_deadline_seconds"] > defaults["task_events_ack_deadline_seconds"]
    # Dead-lettering is the last resort: after the worker's own attempts (MAX_ATTEMPTS=3).
    assert root.variables["max_delivery_attempts"]["default"] > 3


def test_every_work_subscription_retries_exponentially_and_dead_letters(queue_module):
    subscriptions = queue_module.of_type("google_pubsub_subscription")
    work = {name: sub for name, sub in subscriptions.items() if name != "dead_letter_hold"}
    assert work
    for name, subscription in work.items():
        policy = only(subscription["dead_letter_policy"])
        assert policy["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}", name
        assert policy["max_delivery_attempts"] == "${var.max_delivery_attempts}", name
        retry = only(subscription["retry_policy"])
        assert retry["minimum_backoff"] and retry["maximum_backoff"], name
        assert subscription["ack_deadline_seconds"] == "${each.value}", name
    # The hold subscription keeps dead letters until someone reads them.
    hold = subscriptions["dead_letter_hold"]
    assert hold["topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert "dead_letter_policy" not in hold


def test_pubsub_service_agent_may_dead_letter(queue_module):
    publisher = queue_module.resource("google_pubsub_topic_iam_member", "dead_letter_publisher")
    assert publisher["topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert publisher["role"] == "roles/pubsub.publisher"
    assert publisher["member"] == "${var.pubsub_service_agent}"
    subscriber = queue_module.resource("google_pubsub_subscription_iam_member", "dead_letter_subscriber")
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert subscriber["member"] == "${var.pubsub_service_agent}"


# --- load balancer and instance groups -----------------------------------------------------


def test_load_balancer_routes_auth_and_api_and_defaults_to_the_web_app(root):
    url_map = root.resource("google_compute_url_map", "https")
    api = '${google_compute_backend_service.services["api"].id}'
    auth = '${google_compute_backend_service.services["auth"].id}'
    web = "${google_compute_backend_bucket.web.id}"
    assert url_map["default_service"] == web
    matcher = only(url_map["path_matcher"])
    assert matcher["default_service"] == web
    to_api = [
        rule for rule in matcher["route_rules"] if rule["service"] == api and "route_action" not in rule
    ]
    assert len(to_api) == 1
    assert {"prefix_match": "/tasks"} in to_api[0]["match_rules"]
    assert {"prefix_match": "/uploads"} in to_api[0]["match_rules"]
    assert {"full_path_match": "/openapi.json"} in to_api[0]["match_rules"]
    to_auth = [rule for rule in matcher["route_rules"] if rule["service"] == auth]
    assert len(to_auth) == 1 and "route_action" not in to_auth[0]
    assert {"prefix_match": "/auth/"} in to_auth[0]["match_rules"]
    assert {"full_path_match": "/auth"} in to_auth[0]["match_rules"]
    https = root.resource("google_compute_global_forwarding_rule", "https")
    assert https["port_range"] == "443"
    assert https["load_balancing_scheme"] == "EXTERNAL_MANAGED"
    proxy = root.resource("google_compute_target_https_proxy", "lb")
    assert proxy["ssl_policy"] == "${google_compute_ssl_policy.modern.id}"


def _cache_control(rule: dict, root) -> str:
    added = only(only(rule["header_action"])["response_headers_to_add"])
    assert added["header_name"] == "Cache-Control" and added["replace"] is True
    return (
        added["header_value"]
        .replace("${local.web_cache.page}", root.locals["web_cache"]["page"])
        .replace("${local.web_cache.assets}", root.locals["web_cache"]["assets"])
    )


def test_the_web_app_is_a_private_backend_bucket_with_its_cache_and_security_headers(root):
    from infra.local.gateway import WEB_CSP

    web = "${google_compute_backend_bucket.web.id}"
    matcher = only(root.resource("google_compute_url_map", "https")["path_matcher"])
    to_web = {
        tuple(next(iter(m.values())) for m in rule["match_rules"]): rule
        for rule in matcher["route_rules"]
        if rule["service"] == web
    }
    page = to_web[("/", "/index.html")]
    assert only(only(page["route_action"])["url_rewrite"])["path_prefix_rewrite"] == "/index.html"
    assert _cache_control(page, root) == "no-cache"
    assert _cache_control(to_web[("/assets/",)], root) == "public, max-age=31536000, immutable"

    backend = root.resource("google_compute_backend_bucket", "web")
    assert backend["bucket_name"] == "${google_storage_bucket.web.name}"
    headers = dict(header.split(": ", 1) for header in backend["custom_response_headers"])
    # The same policy as the local gateway's: one origin, no inline script, no framing.
    assert headers["Content-Security-Policy"] == "${local.web_csp}"
    directives = re.findall(r'"([^"]+)"', root.locals["web_csp"].removeprefix('${join("; ", '))
    assert "; ".join(directives) == WEB_CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    web_tf = (TERRAFORM / "web.tf").read_text()

    bucket = root.resource("google_storage_bucket", "web")
    assert bucket["public_access_prevention"] == "enforced"
    reader = root.resource("google_storage_bucket_iam_member", "web_reader")
    assert reader["role"] == "roles/storage.objectViewer"
    assert reader["member"] == "${local.web_reader}"
    assert "allUsers" not in web_tf and "allAuthenticatedUsers" not in web_tf


def test_load_balancer_health_checks_ask_readyz(root):
    checks = root.resource("google_compute_health_check", "readiness")
    assert only(checks["http_health_check"])["request_path"] == "/readyz"
    backends = root.resource("google_compute_backend_service", "services")
    assert backends["health_checks"] == ["${google_compute_health_check.readiness[each.key].id}"]
    assert only(backends["backend"])["group"] == "${each.value}"


def test_readyz_is_answered_404_by_the_load_balancer_not_served_from_the_internet(root):
    matcher = only(root.resource("google_compute_url_map", "https")["path_matcher"])
    readyz = [
        rule for rule in matcher["route_rules"] if {"full_path_match": "/readyz"} in rule["match_rules"]
    ]
    assert len(readyz) == 1
    abort = only(only(only(readyz[0]["route_action"])["fault_injection_policy"])["abort"])
    assert abort == {"http_status": 404, "percentage": 100}
    # It is matched before any other route; the health checks ask the instances directly.
    assert readyz[0]["priority"] < min(r["priority"] for r in matcher["route_rules"] if r is not readyz[0])
    assert "fault_injection_policy" not in str([r for r in matcher["route_rules"] if r is not readyz[0]]), (
        "only /readyz is aborted"
    )
    check = only(root.resource("google_compute_health_check", "readiness")["http_health_check"])
    assert check["request_path"] == "/readyz" and check["port"] == 8080


@pytest.mark.parametrize("path", ["/readyz", "/ready%7A", "/ready%7a", "//readyz", "/readyz/", "/%72eadyz"])
def test_cloud_armor_refuses_readyz_in_the_spellings_the_api_would_decode(root, path):
    from urllib.parse import unquote

    rules = [rule for rule in _armor_rules(root) if "readyz" in str(rule["match"])]
    assert len(rules) == 1 and rules[0]["action"] == "deny(404)"
    expression = only(only(rules[0]["match"])["expr"])["expression"]
    found = re.fullmatch(r"request\.path\.urlDecode\(\)\.matches\('(.+)'\)", expression)
    assert found, expression
    assert re.search(found.group(1), unquote(path))
    assert not re.search(found.group(1), unquote("/healthz")) and not re.search(
        found.group(1), "/tasks/readyz"
    )


def test_every_answer_of_a_backend_carries_hsts(root):
    backends = root.resource("google_compute_backend_service", "services")
    hsts = [h for h in backends["custom_response_headers"] if h.startswith("Strict-Transport-Security:")]
    assert len(hsts) == 1
    max_age = int(re.search(r"max-age=(\d+)", hsts[0]).group(1))
    assert max_age >= 365 * 24 * 3600
    # The answers are all HTTPS: port 80 reaches only a redirect, never a backend.
    redirect = root.resource("google_compute_url_map", "http_redirect")
    assert "default_service" not in redirect and only(redirect["default_url_redirect"])["https_redirect"]
    assert root.resource("google_compute_global_forwarding_rule", "http_redirect")["target"] == (
        "${google_compute_target_http_proxy.redirect.id}"
    )


def _armor_rules(root) -> list[dict]:
    policy = root.resource("google_compute_security_policy", "edge")
    rules = list(policy["rule"])
    for block in policy.get("dynamic", []):
        generated = block["rule"]
        for priority, rule_set in generated["for_each"].items():
            content = only(generated["content"])
            expression = only(only(content["match"])["expr"])["expression"].replace("${rule.value}", rule_set)
            rules.append(
                content | {"priority": int(priority), "match": [{"expr": [{"expression": expression}]}]}
            )
    return rules


def test_cloud_armor_guards_both_backends_with_a_per_client_rate_limit(root):
    backends = root.resource("google_compute_backend_service", "services")
    assert backends["security_policy"] == "${google_compute_security_policy.edge.id}"
    rules = _armor_rules(root)
    assert len({rule["priority"] for rule in rules}) == len(rules)
    limits = [rule for rule in rules if rule["action"] in ("throttle", "rate_based_ban")]
    assert len(limits) == 1
    options = only(limits[0]["rate_limit_options"])
    assert options["enforce_on_key"] == "IP" and options["exceed_action"] == "deny(429)"
    threshold = only(options["rate_limit_threshold"])
    assert threshold == {"count": "${var.armor_requests_per_minute}", "interval_sec": 60}
    assert only(only(limits[0]["match"])["config"])["src_ip_ranges"] == ["*"]
    default = max(rules, key=lambda rule: rule["priority"])
    assert default["priority"] == 2147483647 and default["action"] == "allow"


def test_preconfigured_waf_rules_deny_but_spare_the_submission_bodies(root):
    waf = {}
    for rule in _armor_rules(root):
        expression = only(only(rule["match"]).get("expr", [{}])).get("expression", "")
        found = re.match(r"evaluatePreconfiguredWaf\('([a-z0-9-]+)'", expression)
        if found:
            waf[found.group(1)] = (rule, expression)
    assert {"sqli-v33-stable", "xss-v33-stable", "lfi-v33-stable", "rce-v33-stable", "cve-canary"} <= set(waf)
    # Remote-file inclusion refuses URLs in bodies: the seed's way to submit a task.
    assert not any(name.startswith("rfi") for name in waf)
    for name, (rule, expression) in waf.items():
        assert rule["action"].startswith("deny(") and not rule.get("preview"), name
        if name == "cve-canary":
            continue
        assert "{'sensitivity': 1}" in expression, name
        assert expression.endswith("&& !(request.method == 'POST' && request.path == '/tasks')"), name


@pytest.mark.parametrize("service", ["auth", "api", "transcoder", "dispatcher"])
def test_each_vm_service_is_a_group_of_its_own_image_and_account(root, service):
    module = root.modules[service]
    assert module["source"] == "./modules/container_mig"
    assert module["image"] == f'${{local.images["{service}"]}}'
    assert module["service_account_email"] == f'${{google_service_account.runtime["{service}"].email}}'
    assert "INSTANCE_CONNECTION_NAME" in root.locals["common_env"]


def test_groups_autoheal_and_roll_out_without_losing_capacity(mig_module):
    group = mig_module.resource("google_compute_region_instance_group_manager", "this")
    healing = only(group["auto_healing_policies"])
    assert healing["health_check"] == "${google_compute_health_check.this.id}"
    update = only(group["update_policy"])
    assert update["type"] == "PROACTIVE" and update["max_unavailable_fixed"] == 0
    assert (
        only(group["version"])["instance_template"]
        == "${google_compute_instance_template.this.self_link_unique}"
    )
    template = mig_module.resource("google_compute_instance_template", "this")
    assert template["name_prefix"] == "${var.name}-"
    assert only(template["lifecycle"])["create_before_destroy"] is True
    assert "access_config" not in only(template["network_interface"]), "instances get no public IP"
    assert only(template["service_account"])["email"] == "${var.service_account_email}"
    assert only(template["shielded_instance_config"])["enable_secure_boot"] is True


def test_container_unit_stops_with_sigterm_and_a_drain_window(mig_module):
    unit = mig_module.locals["service_unit"]
    assert "docker stop --time ${var.stop_timeout_seconds}" in unit
    assert "TimeoutStopSec=${var.stop_timeout_seconds + 15}" in unit
    assert "--env-file /run/idrl/" in unit, "secrets are read into tmpfs, not baked in"


def test_the_transcoder_container_runs_under_a_memory_limit_below_the_machine_s(root, mig_module):
    unit = mig_module.locals["service_unit"]
    assert "${local.memory_flags}" in unit.split("ExecStart=", 1)[1].split("\n", 1)[0]
    flags = mig_module.locals["memory_flags"]
    assert "--memory ${var.memory_limit_mb}m --memory-swap ${var.memory_limit_mb}m" in flags
    assert root.modules["transcoder"]["memory_limit_mb"] == "${var.transcoder_memory_limit_mb}"
    # c2d-standard-4 has 16 GiB: the limit leaves room for the OS and Docker, and holds
    # the worker's ffmpeg runs (one per two vCPUs, each under its own address-space cap).
    assert root.variables["transcoder_machine_type"]["default"] == "c2d-standard-4"
    limit_mb = root.variables["transcoder_memory_limit_mb"]["default"]
    ffmpeg_mb = Settings().ffmpeg_memory_limit_bytes // 2**20
    assert 2 * ffmpeg_mb + 1024 <= limit_mb <= 16384 - 1024


def test_transcoder_autoscales_on_subscription_backlog_per_instance(root):
    autoscaler = root.resource("google_compute_region_autoscaler", "transcoder")
    assert autoscaler["target"] == "${module.transcoder.instance_group_manager_id}"
    policy = only(autoscaler["autoscaling_policy"])
    metric = only(policy["metric"])
    assert metric["name"] == "pubsub.googleapis.com/subscription/num_undelivered_messages"
    assert 'subscription_id = "video-tasks-transcoder"' in metric["filter"]
    assert metric["single_instance_assignment"] == "${var.transcoder_backlog_per_instance}"
    assert policy["min_replicas"] == "${var.transcoder_min_replicas}"
    assert policy["max_replicas"] == "${var.transcoder_max_replicas}"
    scale_in = only(policy["scale_in_control"])
    assert only(scale_in["max_scaled_in_replicas"])["fixed"] == 1
    assert scale_in["time_window_sec"] >= 300


def test_transcoder_drains_within_the_stop_timeout(root):
    module = root.modules["transcoder"]
    assert module["stop_timeout_seconds"] == "${var.transcoder_drain_seconds}"
    assert "var.transcoder_drain_seconds - 20" in module["env"]
    assert module["process_probe"] == "services.transcoder"
    assert module["env"].count('"transcoder"') >= 1  # DB_USER: the read-only role


# --- notifier ----------------------------------------------------------------------------


def test_notifier_is_a_gen2_function_on_task_events(root):
    function = root.resource("google_cloudfunctions2_function", "notifier")
    build = only(function["build_config"])
    assert build["runtime"] == "python311"
    assert build["entry_point"] == "on_task_event"
    trigger = only(function["event_trigger"])
    assert trigger["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert trigger["pubsub_topic"] == "${module.task_events.topic_id}"
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"
    service = only(function["service_config"])
    assert service["vpc_connector"] == "${google_vpc_access_connector.main.id}"
    assert service["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert service["service_account_email"] == '${google_service_account.runtime["notifier"].email}'
    assert only(service["secret_environment_variables"])["key"] == "DB_PASSWORD"


# --- what each service is given ---------------------------------------------------------


def _terraform_env_names(root, service: str) -> set[str]:
    """The variables Terraform sets for ``service``: common_env merged with its own."""
    if service == "notifier":
        config = only(root.resource("google_cloudfunctions2_function", "notifier")["service_config"])
        merged = config["environment_variables"]
        secrets = {only(config["secret_environment_variables"])["key"]}
    else:
        merged = root.modules[service]["env"]
        secrets = set(root.modules[service].get("secret_env", {}))
    assert merged.startswith("${merge(local.common_env, {"), merged
    own = set(re.findall(r"[{,]\s*([A-Z][A-Z0-9_]*)\s*=", merged))
    return set(root.locals["common_env"]) | own | secrets


@pytest.mark.parametrize("service", ["api", "auth", "transcoder", "notifier", "dispatcher"])
def test_terraform_gives_each_service_every_setting_its_production_guard_requires(root, service, monkeypatch):
    from shared.config import PRODUCTION_SETTINGS, Settings

    for name in Settings.model_fields:  # only what Terraform sets may count
        monkeypatch.delenv(name.upper(), raising=False)

    given = {name.lower() for name in _terraform_env_names(root, service)}
    required = {
        name
        for group in PRODUCTION_SETTINGS[service]
        for name in ((group,) if isinstance(group, str) else group)
    }
    settings = Settings(environment="production", **{name: "set-by-terraform" for name in given & required})
    assert settings.missing_production_settings(service) == []


# --- service accounts --------------------------------------------------------------------


def test_one_service_account_per_service(root):
    assert set(root.locals["runtime_accounts"]) == {"api", "auth", "transcoder", "notifier", "dispatcher"}
    assert root.resource("google_service_account", "runtime")["account_id"] == "idrl-${each.key}"


def test_no_basic_roles_and_no_project_wide_impersonation(root):
    text = "\n".join(path.read_text() for path in TF_FILES)
    for role in ("roles/owner", "roles/editor", "roles/viewer"):
        assert f'"{role}"' not in text
    for name, member in root.of_type("google_project_iam_member").items():
        assert member.get("role") not in {
            "roles/iam.serviceAccountUser",
            "roles/iam.serviceAccountTokenCreator",
        }, name


def test_api_signs_urls_only_as_itself(root):
    grant = root.resource("google_service_account_iam_member", "api_signs_as_itself")
    assert grant["role"] == "roles/iam.serviceAccountTokenCreator"
    assert grant["service_account_id"] == '${google_service_account.runtime["api"].name}'
    assert grant["member"] == '${google_service_account.runtime["api"].member}'


def test_transcoder_reads_uploads_and_cannot_write_them(root):
    grants = root.locals["bucket_grants"]
    assert grants["transcoder/uploads"]["role"] == "roles/storage.objectViewer"
    assert grants["transcoder/clips"]["role"] == "roles/storage.objectUser"
    assert "notifier/uploads" not in grants
    janitor = root.resource("google_project_iam_custom_role", "clips_janitor")
    assert "storage.objects.create" not in janitor["permissions"]


def test_every_granted_role_is_explained_in_the_iam_doc(root):
    doc = (REPO / "docs" / "iam.md").read_text()
    text = "\n".join(path.read_text() for path in TERRAFORM.glob("*.tf"))
    roles = set(re.findall(r'"(roles/[A-Za-z0-9_.]+)"', text))
    assert roles
    for role in sorted(roles):
        assert role in doc, f"docs/iam.md does not explain {role}"
    for account in (
        "idrl-api",
        "idrl-auth",
        "idrl-transcoder",
        "idrl-notifier",
        "idrl-dispatcher",
        "idrl-deployer",
    ):
        assert account in doc


# --- monitoring (DESIGN section 10, the original system's policies) -----------------------


def _threshold(policy: dict) -> dict:
    return only(only(policy["conditions"])["condition_threshold"])


def test_autoscaler_alerts_match_the_original_thresholds(root):
    policies = root.locals["autoscaler_threshold_policies"]
    seen = {(p["metric"].rsplit("/", 1)[1], p["threshold"], p["duration"]) for p in policies.values()}
    assert seen == {
        ("current_utilization", 0.75, "300s"),
        ("current_utilization", 0.9, "1800s"),
        ("capacity", 0.75, "300s"),
    }
    resource = root.resource("google_monitoring_alert_policy", "autoscaler")
    threshold = _threshold(resource)
    assert threshold["comparison"] == "COMPARISON_GT"
    assert threshold["threshold_value"] == "${each.value.threshold}"
    assert threshold["duration"] == "${each.value.duration}"


def test_capacity_absent_for_an_hour_alerts(root):
    policy = root.resource("google_monitoring_alert_policy", "autoscaler_capacity_absent")
    absent = only(only(policy["conditions"])["condition_absent"])
    assert "autoscaler.googleapis.com/capacity" in absent["filter"]
    assert absent["duration"] == "3600s"


def test_instance_group_above_four_within_an_hour_alerts(root):
    assert root.variables["instance_group_size_alert"]["default"] == 4
    threshold = _threshold(root.resource("google_monitoring_alert_policy", "instance_group_size"))
    assert "compute.googleapis.com/instance_group/size" in threshold["filter"]
    assert threshold["comparison"] == "COMPARISON_GT"
    assert threshold["threshold_value"] == "${var.instance_group_size_alert}"
    aggregation = only(threshold["aggregations"])
    assert aggregation == {"alignment_period": "3600s", "per_series_aligner": "ALIGN_MAX"}


def test_uptime_check_every_minute_with_ten_second_timeout_expecting_2xx(root):
    check = root.resource("google_monitoring_uptime_check_config", "load_balancer")
    assert check["period"] == "60s" and check["timeout"] == "10s"
    assert check["log_check_failures"] is True
    http = only(check["http_check"])
    assert only(http["accepted_response_status_codes"])["status_class"] == "STATUS_CLASS_2XX"
    assert only(check["monitored_resource"])["labels"]["host"] == "${var.domains[0]}"
    alert = _threshold(root.resource("google_monitoring_alert_policy", "uptime"))
    assert "uptime_check/check_passed" in alert["filter"]


def test_oldest_unacked_message_on_video_tasks_alerts(root):
    threshold = _threshold(root.resource("google_monitoring_alert_policy", "video_tasks_oldest_unacked"))
    assert "subscription/oldest_unacked_message_age" in threshold["filter"]
    assert 'subscription_id = "video-tasks-transcoder"' in threshold["filter"]
    assert threshold["threshold_value"] == "${var.oldest_unacked_alert_seconds}"


def test_anything_reaching_a_dead_letter_topic_alerts(root):
    policy = root.resource("google_monitoring_alert_policy", "dead_letters")
    thresholds = [only(condition["condition_threshold"]) for condition in policy["conditions"]]
    topic = thresholds[0]
    assert "topic/send_message_operation_count" in topic["filter"]
    assert "module.video_tasks.dead_letter_topic_name" in topic["filter"]
    assert "module.task_events.dead_letter_topic_name" in topic["filter"]
    for threshold in thresholds:
        assert threshold["comparison"] == "COMPARISON_GT" and threshold["threshold_value"] == 0


def test_dashboard_shows_backlog_instances_processing_time_and_errors(root):
    titles = list(root.locals["dashboard_charts"])
    for topic in ("Backlog", "Instances", "Processing time", "Errors"):
        assert any(title.startswith(topic) for title in titles), topic
    filters = " ".join(chart["filter"] for chart in root.locals["dashboard_charts"].values())
    assert "num_undelivered_messages" in filters
    assert "instance_group/size" in filters
    assert "ack_latencies" in filters
    assert "response_code_class = 500" in filters


# --- webhooks (docs/webhooks.md) ------------------------------------------------------------


def test_failing_webhook_deliveries_alert(root):
    metric = root.resource("google_logging_metric", "webhook_deliveries_failed")
    assert "jsonPayload.delivery_failed = true" in metric["filter"]
    policy = root.resource("google_monitoring_alert_policy", "webhook_deliveries_failing")
    threshold = _threshold(policy)
    assert "google_logging_metric.webhook_deliveries_failed.name" in threshold["filter"]
    assert threshold["comparison"] == "COMPARISON_GT"
    assert threshold["threshold_value"] == "${var.webhook_failures_alert_count}"


def test_the_oldest_pending_webhook_delivery_alerts(root):
    metric = root.resource("google_logging_metric", "webhook_oldest_pending")
    assert metric["value_extractor"] == "EXTRACT(jsonPayload.oldest_pending_seconds)"
    policy = root.resource("google_monitoring_alert_policy", "webhook_backlog")
    threshold = _threshold(policy)
    assert "google_logging_metric.webhook_oldest_pending.name" in threshold["filter"]
    assert threshold["threshold_value"] == "${var.webhook_backlog_alert_seconds}"
    absent = root.resource("google_monitoring_alert_policy", "webhook_dispatcher_absent")
    assert "condition_absent" in only(absent["conditions"])


def test_the_dispatcher_reads_only_its_own_secrets_and_no_bucket_or_topic(root):
    readers = root.locals["secret_readers"]
    assert {key for key in readers if key.startswith("dispatcher/")} == {
        "dispatcher/db_password_app",
        "dispatcher/webhook_secret_key",
    }
    assert not any(key.startswith("dispatcher/") for key in root.locals["bucket_grants"])
    for name, grant in root.of_type("google_pubsub_topic_iam_member").items():
        assert "dispatcher" not in str(grant), name
