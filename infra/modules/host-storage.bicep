// Host storage for the Functions runtime and the Flex deployment package; identity-only (no shared keys).
// With the storagequeue transport it also holds the archive queues.
param name string
param location string
param tags object
param queueNames array
param logAnalyticsId string
param privateEndpointSubnetId string
@description('Resource group id holding the privatelink DNS zones (used only with privateEndpointSubnetId).')
param privateDnsZonesResourceGroupId string = ''

var deploymentContainerName = 'app-package'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:Without privateEndpointSubnetId the account stays reachable, but only with Entra ID (shared keys are off); with it, the default action is Deny.
  //checkov:skip=CKV_AZURE_206:Host state (leases, timer status, deployment package) is disposable and rebuilt by a deploy; zone-redundant storage suffices.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_ZRS' }
  properties: {
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
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queue in queueNames: {
  parent: queueService
  name: queue
}]

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
    metrics: [{ category: 'Transaction', enabled: true }]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
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

// Private endpoints (blob, queue, table), each registered in its private DNS zone; the app reaches them through its
// VNet integration (main.bicep refuses private endpoints without it).
module endpoints 'private-endpoint.bicep' = [for groupId in (empty(privateEndpointSubnetId) ? [] : ['blob', 'queue', 'table']): {
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
output deploymentContainerName string = deploymentContainerName
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
