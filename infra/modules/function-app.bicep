// The function app on Flex Consumption (Python 3.11), running as the user-assigned identity.
param name string
param planName string
param location string
param tags object
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
  AZURE_CLIENT_ID: identityClientId
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:The manual-archival HTTP routes need an endpoint; they require a function key (health is read-only). Add a private endpoint to close it.
  //checkov:skip=CKV_AZURE_17:Callers authenticate with function keys (or Entra ID in front), not client certificates.
  //checkov:skip=CKV_AZURE_212:Serverless by design: Flex Consumption scales to zero between runs; queue messages wait safely meanwhile.
  //checkov:skip=CKV_AZURE_213:Flex Consumption has no App Service health check; GET /api/health serves probes and the smoke test.
  name: name
  location: location
  tags: tags
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
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
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

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
