// The archive: ADLS Gen2 (hierarchical namespace) with lifecycle tiering, soft delete and optional WORM immutability.
param name string
param location string
param tags object
param fileSystemName string
param coolAfterDays int
param coldAfterDays int
param archiveAfterDays int
param immutabilityDays int
param softDeleteDays int
param logAnalyticsId string
param privateEndpointSubnetId string
@description('Resource group id holding the privatelink DNS zones (used only with privateEndpointSubnetId).')
param privateDnsZonesResourceGroupId string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:Without privateEndpointSubnetId the account stays reachable, but only with Entra ID (shared keys are off); with it, the default action is Deny.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_GRS' }
  properties: {
    isHnsEnabled: true
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: empty(privateEndpointSubnetId) ? 'Enabled' : 'Disabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: empty(privateEndpointSubnetId) ? 'Allow' : 'Deny'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: softDeleteDays }
    containerDeleteRetentionPolicy: { enabled: true, days: softDeleteDays }
  }
}

resource fileSystem 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: fileSystemName
  properties: { publicAccess: 'None' }
}

// Time-based retention: archived Parquet cannot be changed or deleted for immutabilityDays.
resource immutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (immutabilityDays > 0) {
  parent: fileSystem
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: immutabilityDays
    allowProtectedAppendWrites: false
  }
}

// Tiering starts after the verification window (the dropper re-reads files within hours of writing them).
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'tier-archived-parquet'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: ['blockBlob'], prefixMatch: ['${fileSystemName}/'] }
            actions: {
              baseBlob: {
                tierToCool: { daysAfterModificationGreaterThan: coolAfterDays }
                tierToCold: { daysAfterModificationGreaterThan: coldAfterDays }
                tierToArchive: { daysAfterModificationGreaterThan: archiveAfterDays }
              }
            }
          }
        }
      ]
    }
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      { category: 'StorageRead', enabled: true }
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
    metrics: [{ category: 'Transaction', enabled: true }]
  }
}

// Private endpoints (dfs, blob), each registered in its private DNS zone; the app reaches them through its
// VNet integration (main.bicep refuses private endpoints without it).
module endpoints 'private-endpoint.bicep' = [for groupId in (empty(privateEndpointSubnetId) ? [] : ['dfs', 'blob']): {
  name: 'pe-${name}-${groupId}'
  params: {
    name: 'pe-${name}-${groupId}'
    location: location
    tags: tags
    subnetId: privateEndpointSubnetId
    storageAccountId: storage.id
    groupId: groupId
    privateDnsZoneId: '${privateDnsZonesResourceGroupId}/providers/Microsoft.Network/privateDnsZones/privatelink.${groupId}.${environment().suffixes.storage}'
  }
}]

output name string = storage.name
output id string = storage.id
