// The archive: ADLS Gen2 (hierarchical namespace) with lifecycle tiering, soft delete and optional WORM immutability.
param name string
param location string
param tags object
param fileSystemName string
param coolAfterDays int
param coldAfterDays int
param archiveAfterDays int
@description('Comma-separated data-file prefixes for the Archive tier, as printed by `tsarchive lifecycle`.')
param offlineTierPrefixes string = ''
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

// Time-based retention (WORM) on this filesystem is refused for now: on a hierarchical-namespace account it forbids
// renaming, deleting and overwriting protected blobs, and the archiver publishes each file by a rename from staging,
// removes staged files and rewrites `_delta_log/_last_checkpoint`; with it, no chunk could ever be published (nor,
// once the policy is locked, could the template be re-applied). int() of a sentence fails the deployment with it.
var wormCheck = immutabilityDays > 0 ? int('immutabilityDays > 0 is not supported yet: WORM on the live Delta table blocks the publish rename, staging cleanup and checkpoints (docs/deploy.md, Caveats). Keep it 0.') : 0

resource immutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (immutabilityDays > 0) {
  parent: fileSystem
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: immutabilityDays + wormCheck
    allowProtectedAppendWrites: false
  }
}

// Tiering starts after the verification window (the dropper re-reads files within hours of writing them). Cool and
// Cold are online tiers and apply to the whole filesystem. The offline Archive tier is opt-in (archiveAfterDays > 0)
// and applies only to the data-file prefixes `tsarchive lifecycle` prints (each table's `year=` and `range_start=`
// folders): on a hierarchical-namespace account prefixMatch is the only filter, and a rule over everything would
// take the Delta log offline too, after which no reader can open the table (shared_code/lifecycle.py).
var offlinePrefixes = empty(offlineTierPrefixes) ? [] : split(offlineTierPrefixes, ',')
var offlineRuleCount = archiveAfterDays > 0 ? (length(offlinePrefixes) + 9) / 10 : 0
var onlineRule = {
  name: 'tsarchive-online-tiers'
  enabled: true
  type: 'Lifecycle'
  definition: {
    filters: { blobTypes: ['blockBlob'], prefixMatch: ['${fileSystemName}/'] }
    actions: {
      baseBlob: {
        tierToCool: { daysAfterModificationGreaterThan: coolAfterDays }
        tierToCold: { daysAfterModificationGreaterThan: coldAfterDays }
      }
    }
  }
}
var offlineRules = [for i in range(0, offlineRuleCount): {
  name: 'tsarchive-offline-data-${padLeft(string(i + 1), 2, '0')}'
  enabled: true
  type: 'Lifecycle'
  definition: {
    filters: { blobTypes: ['blockBlob'], prefixMatch: take(skip(offlinePrefixes, i * 10), 10) }
    // A rehydrated blob keeps its modification time: the tier-change condition keeps it online 30 days (lifecycle.py).
    actions: { baseBlob: { tierToArchive: { daysAfterModificationGreaterThan: archiveAfterDays, daysAfterLastTierChangeGreaterThan: 30 } } }
  }
}]
// An opted-in Archive tier without data prefixes, or before Cold, is a mistake: fail the deployment saying so.
var offlineCheck = archiveAfterDays > 0 && (empty(offlinePrefixes) || archiveAfterDays <= coldAfterDays) ? int('archiveAfterDays needs offlineTierPrefixes (print them with: tsarchive lifecycle) and must exceed coldAfterDays') : 0

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: offlineCheck == 0 ? concat([onlineRule], offlineRules) : []
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
