// Least-privilege role assignments for the app's identity, named with guid() so re-deploys are idempotent.
// Never Owner, never Service Bus Data Owner, never account keys.
param principalId string
param deployerPrincipalId string
@allowed(['User', 'ServicePrincipal', 'Group'])
param deployerPrincipalType string
param archiveStorageName string
param hostStorageName string
param serviceBusName string
param keyVaultName string
param appInsightsName string

var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a10df2ee6f52'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource archiveStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: archiveStorageName
}

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Write, read back and rename Parquet in the archive.
resource archiveWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(archiveStorage.id, principalId, roles.storageBlobDataContributor)
  scope: archiveStorage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// The Functions host (leases, timer state, Flex deployment package) and, for storagequeue, the archive queues.
resource hostBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, principalId, roles.storageBlobDataContributor)
  scope: hostStorage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource hostQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, principalId, roles.storageQueueDataContributor)
  scope: hostStorage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

resource hostTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, principalId, roles.storageTableDataContributor)
  scope: hostStorage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
  }
}

// Existing-resource references are only names; nothing is looked up unless an assignment below is deployed.
resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: empty(serviceBusName) ? 'unused' : serviceBusName
}

resource busSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(serviceBusName)) {
  name: guid(resourceGroup().id, serviceBusName, principalId, roles.serviceBusDataSender)
  scope: serviceBus
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
  }
}

// The scale controller sizes Flex per-function scaling from the queue length; with Data Receiver alone it cannot read
// the queues and falls back to peek-based estimates (Azure/Azure-Functions#2379). A custom role with the namespace's
// read actions, and nothing else, avoids Data Owner (which could also delete queues and send as anyone).
resource queueReaderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(serviceBusName)) {
  name: guid(resourceGroup().id, 'tsarchive-servicebus-queue-reader')
  properties: {
    roleName: 'tsarchive Service Bus queue reader (${resourceGroup().name})'
    description: 'Read a Service Bus namespace and its queues (lengths for scaling); no data access, no writes.'
    type: 'CustomRole'
    assignableScopes: [resourceGroup().id]
    permissions: [{
      actions: ['Microsoft.ServiceBus/namespaces/read', 'Microsoft.ServiceBus/namespaces/queues/read']
      notActions: []
      dataActions: []
      notDataActions: []
    }]
  }
}

resource busQueueReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(serviceBusName)) {
  name: guid(resourceGroup().id, serviceBusName, principalId, 'tsarchive-servicebus-queue-reader')
  scope: serviceBus
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: queueReaderRole.id
  }
}

resource busReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(serviceBusName)) {
  name: guid(resourceGroup().id, serviceBusName, principalId, roles.serviceBusDataReceiver)
  scope: serviceBus
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: empty(keyVaultName) ? 'unused' : keyVaultName
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(keyVaultName)) {
  name: guid(resourceGroup().id, keyVaultName, principalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// The deploying user may read the archive (smoke test, DuckDB queries); optional.
resource deployerReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(archiveStorage.id, deployerPrincipalId, roles.storageBlobDataReader)
  scope: archiveStorage
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
  }
}
