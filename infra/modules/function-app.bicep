// The function app on Flex Consumption (Python 3.11), running as the user-assigned identity.
param name string
param planName string
param location string
param tags object
@description('Tags of the site alone (azd-service-name must be on one resource only).')
param siteTags object
param identityId string
param identityClientId string
param hostStorageName string
param deploymentContainerName string
param appInsightsConnectionString string
param instanceMemoryMB int
param maximumInstanceCount int
param functionsSubnetId string
param appSettings object
param keyVaultReferenceIdentityId string
@description('Zone-redundant plan; available for Flex Consumption in some regions only.')
param zoneRedundant bool = false

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy exists in some regions only; the zoneRedundant parameter turns it on where it does.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true, zoneRedundant: zoneRedundant }
}

var runtimeSettings = {
  AzureWebJobsStorage__accountName: hostStorage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // host.json telemetryMode OpenTelemetry: the worker exports (configure_azure_monitor, with the identity above) and
  // parents each invocation on the host's span; the app then exports nothing itself (shared_code/telemetry.py).
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME: 'tsarchive'
  AZURE_CLIENT_ID: identityClientId
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:The manual-archival HTTP routes need an endpoint; they require a function key (health is read-only). Add a private endpoint to close it.
  //checkov:skip=CKV_AZURE_17:Callers authenticate with function keys (or Entra ID in front), not client certificates.
  //checkov:skip=CKV_AZURE_212:Serverless by design: Flex Consumption scales to zero between runs; queue messages wait safely meanwhile.
  //checkov:skip=CKV_AZURE_78:Flex Consumption rejects siteConfig.ftpsState; FTP is closed by the basicPublishingCredentialsPolicies 'ftp' below.
  //checkov:skip=CKV_AZURE_67:Flex Consumption takes no http20Enabled in siteConfig: Microsoft's Flex samples set only minTlsVersion.
  //checkov:skip=CKV_AZURE_18:Same as CKV_AZURE_67: no siteConfig.http20Enabled on Flex Consumption.
  //checkov:skip=CKV_AZURE_213:Flex Consumption has no App Service health check; GET /api/health serves probes and the smoke test.
  name: name
  location: location
  tags: siteTags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: keyVaultReferenceIdentityId
    virtualNetworkSubnetId: empty(functionsSubnetId) ? null : functionsSubnetId
    // Flex Consumption rejects most siteConfig properties (ftpsState among them; the "Flex Consumption plan
    // deprecations" table, docs/deploy.md); FTP and SCM basic auth are closed below instead.
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [for setting in items(union(appSettings, runtimeSettings)): { name: setting.key, value: setting.value }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identityId }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }
}

// No FTP and no basic-auth deployment: the package is published with Entra ID (azd, Core Tools).
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'ftp'
  properties: { allow: false }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'scm'
  properties: { allow: false }
}

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
