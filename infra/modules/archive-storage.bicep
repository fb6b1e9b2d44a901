// The archive: ADLS Gen2 (hierarchical namespace) with lifecycle tiering and soft delete; with immutabilityDays > 0, a
// second container (the vault) of create-only final copies under a time-based WORM policy.
param name string
param location string
param tags object
param fileSystemName string
param coolAfterDays int
param coldAfterDays int
param archiveAfterDays int
@description('Comma-separated data-file prefixes for the Archive tier, as printed by `tsarchive lifecycle`.')
param offlineTierPrefixes string = ''
@description('Days of time-based retention (WORM) on the vault container; 0: no vault.')
param immutabilityDays int
@description('True once the vault policy is locked: a locked policy can only be extended (az storage container immutability-policy extend), and a PUT of it fails, so the template stops declaring it.')
param immutabilityPolicyLocked bool = false
param vaultFileSystemName string = 'vault'
@description('Vault path prefix the archiver writes under (the path of ARCHIVER_VAULT_URL).')
param vaultRoot string = 'timescale'
@description('Days after which vault data files move to the offline Archive tier; 0 keeps them online (Cool, then Cold). The manifests stay online.')
param vaultArchiveAfterDays int = 0
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

// WORM never goes on the live filesystem: on a hierarchical-namespace account it forbids renaming, deleting and
// overwriting protected blobs, and the live Delta table needs all three (publish by rename, re-archives, the
// `_delta_log/_last_checkpoint` rewrite). The vault takes the policy instead: the archiver only ever creates there
// (shared_code/vault.py). A locked policy accepts no PUT, only an extension, so once it is locked the template stops
// declaring it (immutabilityPolicyLocked) and re-provisioning goes on working.
resource vault 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (immutabilityDays > 0) {
  parent: blobService
  name: vaultFileSystemName
  properties: { publicAccess: 'None' }
}

resource vaultPolicy 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if ((immutabilityDays > 0) && !immutabilityPolicyLocked) {
  parent: vault
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: immutabilityDays
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
// The vault: data files may go offline (nothing reads them but an audit, and a drop checks them by size only,
// which a listing answers for an archived blob); the manifests under `manifests/` stay online.
var vaultRules = immutabilityDays > 0 ? concat([{
  name: 'tsarchive-vault-online-tiers'
  enabled: true
  type: 'Lifecycle'
  definition: {
    filters: { blobTypes: ['blockBlob'], prefixMatch: ['${vaultFileSystemName}/${vaultRoot}/'] }
    actions: {
      baseBlob: {
        tierToCool: { daysAfterModificationGreaterThan: coolAfterDays }
        tierToCold: { daysAfterModificationGreaterThan: coldAfterDays }
      }
    }
  }
}], vaultArchiveAfterDays > 0 ? [{
  name: 'tsarchive-vault-offline-data'
  enabled: true
  type: 'Lifecycle'
  definition: {
    filters: { blobTypes: ['blockBlob'], prefixMatch: ['${vaultFileSystemName}/${vaultRoot}/data/'] }
    actions: { baseBlob: { tierToArchive: { daysAfterModificationGreaterThan: vaultArchiveAfterDays, daysAfterLastTierChangeGreaterThan: 30 } } }
  }
}] : []) : []
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
      rules: offlineCheck == 0 ? concat([onlineRule], offlineRules, vaultRules) : []
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
output vaultUrl string = immutabilityDays > 0 ? 'abfss://${vaultFileSystemName}@${storage.name}.dfs.${environment().suffixes.storage}/${vaultRoot}' : ''
output id string = storage.id
