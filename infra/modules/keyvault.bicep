// Key Vault for databaseAuth=keyvault: the database URL (with its password) as a secret, read through a
// Key Vault reference by the app's managed identity. RBAC only, purge-protected.
param name string
param location string
param tags object
@secure()
param databaseUrlSecret string
param logAnalyticsId string
@description('Recover the soft-deleted vault of this name (a redeploy within 90 days of azd down: purge protection keeps the name).')
param recover bool = false
@description('Secret expiry (epoch seconds): one year after deployment, so the database password gets rotated.')
param secretExpiresAt int = dateTimeToEpoch(dateTimeAdd(utcNow(), 'P365D'))

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109:Access is RBAC-only for one identity; network rules need VNet integration, which is optional (functionsSubnetId).
  //checkov:skip=CKV_AZURE_189:As above: a Flex app without VNet integration resolves Key Vault references over the public endpoint.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    createMode: recover ? 'recover' : 'default'
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { bypass: 'AzureServices', defaultAction: 'Allow' }
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'archiver-database-url'
  properties: {
    value: databaseUrlSecret
    contentType: 'text/plain'
    attributes: { enabled: true, exp: secretExpiresAt }
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsId
    logs: [{ categoryGroup: 'audit', enabled: true }]
  }
}

output name string = vault.name
output secretUri string = secret.properties.secretUri
