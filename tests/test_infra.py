"""Bicep templates, checked here without a Bicep compiler: parse, structure, names shared with the code, checkov."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from pycep import BicepParser

from shared_code.settings import Settings
from shared_code.transport import QUEUE_STORAGE_CONNECTION, SERVICEBUS_CONNECTION

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "090c5cfd-751d-490a-894a-3ce6f1109419": "Azure Service Bus Data Owner",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
}
ALLOWED_ROLES = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe", "2a2b9908-6ea1-4ae2-8e65-a10df2ee6f52",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39", "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
    "4633458b-17de-408a-b874-0445c86b69e6", "3913510d-42f4-4e42-8a64-420c390055eb",
}


def parse(path: Path) -> dict:
    return BicepParser().parse(text=path.read_text())


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict]:
    return {str(p.relative_to(INFRA)): parse(p) for p in BICEP_FILES}


def body(config: dict) -> dict:
    """The declaration itself, whether or not it is wrapped in a condition or a loop."""
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def resources_of_type(parsed: dict[str, dict], kind: str) -> list[tuple[str, dict]]:
    return [(f"{file}:{name}", body(res["config"])) for file, tree in parsed.items()
            for name, res in tree.get("resources", {}).items() if res["type"] == kind and not res.get("existing")]


def test_every_template_parses(parsed):
    assert len(parsed) >= 9
    assert parsed["main.bicep"]["globals"]["scope"]["value"] == "subscription"


def test_modules_exist_and_get_exactly_their_parameters(parsed):
    main = parsed["main.bicep"]
    text = (INFRA / "main.bicep").read_text()
    for name, module in main["modules"].items():
        path = module["detail"]["path"]
        assert (INFRA / path).exists(), path
        target = parsed[path]
        given = set(body(module["config"])["params"])
        declared = set(target["parameters"])
        required = {p for p, spec in target["parameters"].items() if spec.get("default") is None}
        assert given <= declared, f"{name}: unknown params {given - declared}"
        assert required <= given, f"{name}: missing params {required - given}"
        used = set(re.findall(rf"\b{name}\.outputs\.(\w+)", text))
        assert used <= set(target.get("outputs", {})), f"{name}: unknown outputs {used - set(target['outputs'])}"


def test_archive_is_adls_gen2_and_no_shared_keys(parsed):
    accounts = resources_of_type(parsed, "Microsoft.Storage/storageAccounts")
    assert len(accounts) == 2
    for where, config in accounts:
        assert config["properties"]["allowSharedKeyAccess"] is False, where
        assert config["properties"]["allowBlobPublicAccess"] is False, where
        assert config["properties"]["minimumTlsVersion"] == "TLS1_2", where
    archive = dict(accounts)["modules/archive-storage.bicep:storage"]
    assert archive["properties"]["isHnsEnabled"] is True


def test_lifecycle_tiers_after_the_verification_window(parsed):
    (where, policy), = resources_of_type(parsed, "Microsoft.Storage/storageAccounts/managementPolicies")
    online = parsed["modules/archive-storage.bicep"]["variables"]["onlineRule"]["value"]
    assert set(online["definition"]["actions"]["baseBlob"]) == {"tierToCool", "tierToCold"}  # both online tiers
    defaults = parsed["main.bicep"]["parameters"]
    cool, cold, arch = (defaults[p]["default"] for p in ("coolAfterDays", "coldAfterDays", "archiveAfterDays"))
    assert 1 <= cool < cold and arch == 0  # nothing goes offline unless the operator opts in
    soft = [c["properties"]["deleteRetentionPolicy"]["enabled"] for _, c in
            resources_of_type(parsed, "Microsoft.Storage/storageAccounts/blobServices")]
    assert soft and all(soft)


def test_worm_only_on_the_vault_and_never_re_put_once_locked(parsed):
    """WORM on the live table would block every publish (rename), re-archive and checkpoint; the policy goes on the
    vault container, and once locked (only an extension is allowed then) the template stops declaring it."""
    archive = parsed["modules/archive-storage.bicep"]
    (where, policy), = resources_of_type(parsed, "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies")
    assert policy["parent"] == "vault" and where.endswith(":vaultPolicy")
    condition = archive["resources"]["vaultPolicy"]["config"]["condition"]["operator"]
    assert condition["type"] == "and"
    unless_locked = {"operator": {"type": "not", "operands": {"bool_value": "immutabilityPolicyLocked"}}}
    assert condition["operands"]["operand_2"] == unless_locked
    vault = archive["resources"]["vault"]["config"]
    assert "condition" in vault and body(vault)["parent"] == "blobService"
    assert all(body(r["config"]).get("parent") != "fileSystem" for r in archive["resources"].values())
    text = (INFRA / "main.bicep").read_text()
    assert "ARCHIVER_VAULT_URL: archiveStorage.outputs.vaultUrl" in text
    assert parsed["main.bicep"]["parameters"]["immutabilityDays"]["default"] == 0  # the vault is opt-in
    rules = (INFRA / "modules" / "archive-storage.bicep").read_text()
    # only vault data files can go offline; the manifests stay online
    assert "prefixMatch: ['${vaultFileSystemName}/${vaultRoot}/data/']" in rules


def test_service_bus_duplicate_detection_and_no_local_auth(parsed):
    (_, namespace), = resources_of_type(parsed, "Microsoft.ServiceBus/namespaces")
    assert namespace["properties"]["disableLocalAuth"] is True
    assert namespace["sku"]["name"] in ("Standard", "Premium")
    (_, queue), = resources_of_type(parsed, "Microsoft.ServiceBus/namespaces/queues")
    props = queue["properties"]
    assert props["requiresDuplicateDetection"] is True and props["deadLetteringOnMessageExpiration"] is True
    host = json.loads((ROOT / "host.json").read_text())
    assert props["maxDeliveryCount"] == host["extensions"]["queues"]["maxDequeueCount"]
    assert props["lockDuration"] == "PT5M"


def test_monitoring_uses_entra_only(parsed):
    (_, insights), = resources_of_type(parsed, "Microsoft.Insights/components")
    assert insights["properties"]["DisableLocalAuth"] is True
    (_, workspace), = resources_of_type(parsed, "Microsoft.OperationalInsights/workspaces")
    assert workspace["properties"]["features"]["disableLocalAuth"] is True
    app = (INFRA / "modules" / "function-app.bicep").read_text()
    assert "Authorization=AAD" in app
    assert len(resources_of_type(parsed, "Microsoft.Insights/diagnosticSettings")) >= 4
    alerts = (INFRA / "modules" / "alerts.bicep").read_text()
    assert "DeadletteredMessages" in alerts and "tsarchive.chunks.failed" in alerts and "tsarchive.backlog" in alerts


def test_role_assignments_least_privilege_and_guid_named(parsed):
    assignments = resources_of_type(parsed, "Microsoft.Authorization/roleAssignments")
    assert len(assignments) >= 8
    text = (INFRA / "modules" / "roles.bicep").read_text()
    role_ids = set(re.findall(r"'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'", text))
    assert not role_ids & set(FORBIDDEN_ROLES), [FORBIDDEN_ROLES[r] for r in role_ids & set(FORBIDDEN_ROLES)]
    assert role_ids <= ALLOWED_ROLES
    for where, config in assignments:
        assert str(config["name"]).startswith("guid(") or "function" in json.dumps(config["name"]), where


def _app_settings() -> set[str]:
    text = (INFRA / "main.bicep").read_text()
    block = text.split("appSettings: {", 1)[1].split("\n    }", 1)[0]
    names = set(re.findall(r"^\s+(\w+):", block, re.M))
    runtime = (INFRA / "modules" / "function-app.bicep").read_text().split("var runtimeSettings = {", 1)[1].split("}", 1)[0]
    return names | set(re.findall(r"^\s+(\w+):", runtime, re.M))


def test_identity_connection_settings_match_the_code(monkeypatch):
    from .functions_support import load_app

    settings = _app_settings()
    assert f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace" in settings
    assert f"{QUEUE_STORAGE_CONNECTION}__queueServiceUri" in settings
    assert {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId"} <= settings
    assert not any(name in settings for name in ("AzureWebJobsStorage", "ServiceBusConnection", "ArchiverQueueStorage"))
    for transport in ("servicebus", "storagequeue"):
        functions = load_app(monkeypatch, transport)
        for function in functions.values():
            for binding in function.get_bindings():
                connection = getattr(binding, "connection", None)
                if connection:
                    assert any(s.startswith(f"{connection}__") for s in settings), connection
                for attribute in ("queue_name", "schedule"):
                    value = getattr(binding, attribute, None)
                    if isinstance(value, str) and value.startswith("%"):
                        assert value.strip("%") in settings, value


def test_queue_names_agree_everywhere():
    main = (INFRA / "main.bicep").read_text()
    bicep_queues = re.search(r"var queueNames = \[(.*?)\]", main).group(1)
    bicep_names = re.findall(r"'([a-z0-9-]+)'", bicep_queues)
    defaults = Settings.model_fields
    code_names = [defaults[f].default for f in ("requests_queue", "confirmations_queue", "poison_queue")]
    local = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    local_names = [local[k] for k in ("ARCHIVER_REQUESTS_QUEUE", "ARCHIVER_CONFIRMATIONS_QUEUE", "ARCHIVER_POISON_QUEUE")]
    assert bicep_names == code_names == local_names
    assert "ARCHIVER_REQUESTS_QUEUE: queueNames[0]" in main and "ARCHIVER_CONFIRMATIONS_QUEUE: queueNames[1]" in main


def test_timeouts_consistent_with_host_json():
    host = json.loads((ROOT / "host.json").read_text())

    def minutes(text: str) -> float:
        h, m, s = (int(x) for x in text.split(":"))
        return h * 60 + m + s / 60

    timeout = minutes(host["functionTimeout"])
    assert minutes(host["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"]) > timeout
    main = (INFRA / "main.bicep").read_text()
    requeue = int(re.search(r"ARCHIVER_REQUEUE_AFTER_MINUTES: '(\d+)'", main).group(1))
    assert requeue > timeout  # a job still running is never re-sent
    assert Settings.model_fields["requeue_after_minutes"].default > timeout


def test_function_app_is_flex_python_311_with_user_identity(parsed):
    (_, plan), = resources_of_type(parsed, "Microsoft.Web/serverfarms")
    assert plan["sku"]["name"] == "FC1"
    (_, site), = resources_of_type(parsed, "Microsoft.Web/sites")
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert set(config["scaleAndConcurrency"]) == {"instanceMemoryMB", "maximumInstanceCount"}
    assert site["identity"]["type"] == "UserAssigned" and site["properties"]["httpsOnly"] is True


def test_azd_files():
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    main = (INFRA / "main.bicep").read_text()
    assert set(re.findall(r"abbrs\.(\w+)", main)) <= set(abbreviations)
    assert "'azd-env-name': environmentName" in main and "uniqueString(" in main
    assert "host: function" in (ROOT / "azure.yaml").read_text()


def test_checkov_finds_no_failed_checks():
    checkov = ROOT / ".venv-checkov" / "bin" / "checkov"
    assert checkov.exists(), "run `make setup` (it installs checkov into .venv-checkov)"
    result = subprocess.run([str(checkov), "-d", str(INFRA), "--framework", "bicep", "--skip-download", "-o", "json"],
                            capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for r in reports for c in r["results"]["failed_checks"]]
    assert failed == []
    skipped = [c for r in reports for c in r["results"]["skipped_checks"]]
    assert skipped and all(len(c["check_result"].get("suppress_comment") or "") > 20 for c in skipped)  # justified inline
    assert sum(r["summary"]["passed"] for r in reports) >= 30


def test_the_workbook_charts_what_operators_need_from_metrics_the_code_emits(parsed):
    workbook = json.loads((ROOT / "infra" / "modules" / "workbook.json").read_text())
    panels = {item["name"]: item["content"] for item in workbook["items"] if item["type"] == 3}
    assert {"backlog", "oldest-due", "rows-per-day", "bytes-per-day", "failures", "drop-lag"} <= set(panels)
    telemetry = (ROOT / "shared_code" / "telemetry.py").read_text()
    for name, content in panels.items():
        for metric in re.findall(r'name == "([^"]+)"', content["query"]):
            assert f'"{metric}"' in telemetry, (name, metric)  # a panel over a metric nobody emits stays empty
    bicep = (ROOT / "infra" / "modules" / "workbook.bicep").read_text()
    assert "loadTextContent('workbook.json')" in bicep and "guid(" in bicep
    assert "module workbook 'modules/workbook.bicep'" in (ROOT / "infra" / "main.bicep").read_text()


# siteConfig properties the Flex Consumption deprecation table names (and ARM rejects, azure-pipelines-tasks#21032),
# with their app-setting counterparts; docs/deploy.md, "Verified against".
FLEX_FORBIDDEN_SITE_CONFIG = {"ftpsState", "use32BitWorkerProcess", "netFrameworkVersion", "linuxFxVersion",
                              "windowsFxVersion", "javaVersion", "powerShellVersion", "alwaysOn",
                              "functionAppScaleLimit", "preWarmedInstanceCount", "functionsRuntimeScaleMonitoringEnabled",
                              "http20Enabled"}
FLEX_FORBIDDEN_APP_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_WORKER_RUNTIME_VERSION",
                               "FUNCTIONS_MAX_HTTP_CONCURRENCY", "FUNCTIONS_WORKER_PROCESS_COUNT", "WEBSITE_RUN_FROM_PACKAGE",
                               "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "ENABLE_ORYX_BUILD",
                               "SCM_DO_BUILD_DURING_DEPLOYMENT", "WEBSITE_NODE_DEFAULT_VERSION",
                               "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT"}


def test_flex_site_sets_no_property_the_flex_deprecation_table_forbids(parsed):
    (_, site), = resources_of_type(parsed, "Microsoft.Web/sites")
    site_config = set(site["properties"]["siteConfig"])
    assert site_config == {"minTlsVersion", "appSettings"}, site_config
    assert not {k for k in site["properties"] if k.lower() in {p.lower() for p in FLEX_FORBIDDEN_SITE_CONFIG}}
    assert not _app_settings() & FLEX_FORBIDDEN_APP_SETTINGS
    policies = resources_of_type(parsed, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted(config["name"] for _, config in policies) == ["ftp", "scm"]  # FTP off the Flex way
    assert all(config["properties"]["allow"] is False for _, config in policies)


def test_only_the_site_carries_azd_service_name():
    app = (INFRA / "modules" / "function-app.bicep").read_text()
    plan_block = app.split("resource plan ", 1)[1].split("\n}\n", 1)[0]
    site_block = app.split("resource site ", 1)[1].split("\n}\n", 1)[0]
    assert "tags: tags" in plan_block and "tags: siteTags" in site_block
    main = (INFRA / "main.bicep").read_text()
    assert main.count("azd-service-name") == 1 and "siteTags: union(tags, { 'azd-service-name'" in main


def test_principal_type_comes_from_a_parameter(parsed):
    main = parsed["main.bicep"]
    assert main["parameters"]["principalType"]["default"] == "User"
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["principalType"]["value"] == "${AZURE_PRINCIPAL_TYPE=User}"
    for where, config in resources_of_type(parsed, "Microsoft.Authorization/roleAssignments"):
        principal = json.dumps(config["properties"]["principalId"])
        kind = config["properties"]["principalType"]
        if "deployerPrincipalId" in principal:
            assert kind == "deployerPrincipalType", where  # a parameter, never a literal 'User'
        else:
            assert kind == "ServicePrincipal", where  # the app's managed identity is a service principal


def test_private_endpoints_come_with_dns_zone_groups_and_require_vnet_integration(parsed):
    endpoints = resources_of_type(parsed, "Microsoft.Network/privateEndpoints")
    assert [where.split(":")[0] for where, _ in endpoints] == ["modules/private-endpoint.bicep"]
    groups = resources_of_type(parsed, "Microsoft.Network/privateEndpoints/privateDnsZoneGroups")
    assert [where.split(":")[0] for where, _ in groups] == ["modules/private-endpoint.bicep"]
    for storage, needed in (("host-storage.bicep", ["blob", "queue", "table"]), ("archive-storage.bicep", ["dfs", "blob"])):
        text = (INFRA / "modules" / storage).read_text()
        assert f"module endpoints 'private-endpoint.bicep' = [for groupId in (empty(privateEndpointSubnetId) ? [] : " \
               f"[{', '.join(repr(g) for g in needed)}])" in text, storage
        assert "privateDnsZoneId: '${privateDnsZonesResourceGroupId}/providers/Microsoft.Network/privateDnsZones/" \
               "privatelink.${groupId}." in text
    dns = (INFRA / "modules" / "private-dns.bicep").read_text()
    assert "['blob', 'dfs', 'queue', 'table']" in dns and "virtualNetworkLinks" in dns
    main = (INFRA / "main.bicep").read_text()
    # Private endpoints without VNet integration fail the deployment, naming the missing parameter.
    guard = re.search(r"var functionsSubnet = privateNetwork && empty\(functionsSubnetId\) \? string\(int\('([^']+)'\)\) "
                      r": functionsSubnetId", main)
    assert guard and "functionsSubnetId" in guard.group(1)
    assert "functionsSubnetId: functionsSubnet\n" in main and "functionsSubnetId: functionsSubnetId\n" not in main


def test_key_vault_can_be_recovered_after_azd_down(parsed):
    (_, vault), = resources_of_type(parsed, "Microsoft.KeyVault/vaults")
    assert vault["properties"]["enablePurgeProtection"] is True
    text = (INFRA / "modules" / "keyvault.bicep").read_text()
    assert "createMode: recover ? 'recover' : 'default'" in text
    assert "recover: keyVaultRecover" in (INFRA / "main.bicep").read_text()


def _ignored_by(rules: Path, paths: list[str], tmp: Path) -> set[str]:
    """The paths git's own matcher excludes under `rules` alone (gitignore syntax, as Core Tools and azd read it)."""
    repo = tmp / "match"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text(rules.read_text())
    result = subprocess.run(["git", "-C", str(repo), "check-ignore", "--no-index", "--stdin"], input="\n".join(paths),
                            capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    return set(result.stdout.split())


def test_funcignore_excludes_every_local_folder_and_keeps_the_app(tmp_path):
    # What the local tools create is what .gitignore ignores: each such path, present now or named there.
    present = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
                             capture_output=True, text=True, check=True).stdout.split()
    named = [line.strip().lstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    local = sorted({p.rstrip("/") for p in present + [n.replace("*", "x") for n in named]} - {".python_packages"})
    local = [p for p in local if not p.startswith(".python_packages/")]
    assert {".venv", ".venv-checkov", ".hypothesis", ".local", "tools/node_modules"} <= set(local)
    excluded = _ignored_by(ROOT / ".funcignore", local, tmp_path)
    assert set(local) - excluded == set()
    app = ["function_app.py", "host.json", "requirements.txt", "functions/archiver.py", "shared_code/engine.py",
           ".python_packages/lib/site-packages/psycopg/__init__.py"]
    (tmp_path / "app").mkdir()
    assert _ignored_by(ROOT / ".funcignore", app, tmp_path / "app") == set()


def test_service_bus_scaling_reads_queues_through_a_custom_role_not_data_owner(parsed):
    (_, role), = resources_of_type(parsed, "Microsoft.Authorization/roleDefinitions")
    (permissions,) = role["properties"]["permissions"]
    assert sorted(permissions["actions"]) == ["Microsoft.ServiceBus/namespaces/queues/read",
                                              "Microsoft.ServiceBus/namespaces/read"]
    assert permissions["dataActions"] == [] and all(a.endswith("/read") for a in permissions["actions"])
    text = (INFRA / "modules" / "roles.bicep").read_text()
    assert "roleDefinitionId: queueReaderRole.id" in text


def test_only_the_printed_data_prefixes_can_go_offline(parsed):
    archive = parsed["modules/archive-storage.bicep"]
    text = (INFRA / "modules" / "archive-storage.bicep").read_text()
    assert "prefixMatch: ['${fileSystemName}/']" in text  # the online rule: the whole filesystem, Cool and Cold only
    # two places: the live table's offline data rules, and the vault's data rule (never its manifests)
    assert text.count("tierToArchive") == 2
    assert "prefixMatch: take(skip(offlinePrefixes, i * 10), 10)" in text  # 10 prefixes per rule, the service's limit
    from shared_code.storage.lifecycle import REHYDRATED_ONLINE_DAYS

    assert f"daysAfterLastTierChangeGreaterThan: {REHYDRATED_ONLINE_DAYS} " in text  # the same rule as the CLI prints
    assert "split(offlineTierPrefixes, ',')" in text and archive["parameters"]["offlineTierPrefixes"]["default"] == ""
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["archiveAfterDays"]["value"] == "${ARCHIVER_ARCHIVE_TIER_AFTER_DAYS=0}"
    assert params["offlineTierPrefixes"]["value"] == "${ARCHIVER_OFFLINE_TIER_PREFIXES=}"
